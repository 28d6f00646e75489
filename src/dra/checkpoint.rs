//! The prepared claims, as a small JSON file in the driver's plugin directory, so a restarted
//! driver knows what it wrote: prepare answers a claim it already prepared with the same
//! devices, unprepare removes exactly the files prepare wrote, and no device is prepared for
//! two claims.
//!
//! Written whole through [`crate::files::write_atomically`] (exclusive temp file, rename), never
//! through a link planted at its name. A file that cannot be read or parsed stops the driver:
//! starting empty would forget which devices are in use.

use super::model::ClaimRef;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::io::Read;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

pub const FILE_NAME: &str = "checkpoint.json";
/// Far above any real checkpoint (a few hundred bytes a claim); a bigger file is not ours.
const MAX_BYTES: u64 = 16 << 20;
const VERSION: u32 = 1;

/// One device of a prepared claim, as answered to kubelet.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PreparedDevice {
    pub requests: Vec<String>,
    pub pool: String,
    /// The DNS-label device name.
    pub device: String,
    /// The device ID (`0000:3b:00.2`), which the device-plugin side knows it by.
    pub id: String,
    pub cdi_device_ids: Vec<String>,
}

/// What prepare did for one claim.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PreparedClaim {
    pub claim: ClaimRef,
    pub devices: Vec<PreparedDevice>,
    /// The claim's CDI spec file name (in the CDI directory).
    pub cdi_file: String,
    /// CNI device-info file names written for it (in the device-info directory).
    pub device_info_files: Vec<String>,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct File {
    version: u32,
    claims: BTreeMap<String, PreparedClaim>,
}

#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    #[error("{path}: {err}")]
    Io { path: PathBuf, err: std::io::Error },
    #[error(
        "{path}: not a checkpoint nicplug can read ({why}); fix: move it away only once no pod \
         uses a nicplug.io claim on this node (the driver would forget which devices are in use)"
    )]
    Corrupt { path: PathBuf, why: String },
}

/// Prepared claims by UID, and the file they live in.
#[derive(Debug)]
pub struct Checkpoint {
    dir: PathBuf,
    claims: BTreeMap<String, PreparedClaim>,
}

impl Checkpoint {
    /// Load `dir/checkpoint.json`; none yet is an empty checkpoint.
    pub fn load(dir: &Path) -> Result<Self, CheckpointError> {
        let path = dir.join(FILE_NAME);
        let io = |source| CheckpointError::Io {
            path: path.clone(),
            err: source,
        };
        let mut bytes = Vec::new();
        match std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
            .open(&path)
        {
            Ok(f) => {
                if !f.metadata().map_err(io)?.is_file() {
                    return Err(CheckpointError::Corrupt {
                        path,
                        why: "not a regular file".into(),
                    });
                }
                f.take(MAX_BYTES + 1).read_to_end(&mut bytes).map_err(io)?;
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Ok(Checkpoint {
                    dir: dir.to_path_buf(),
                    claims: BTreeMap::new(),
                });
            }
            Err(e) => return Err(io(e)),
        }
        if bytes.len() as u64 > MAX_BYTES {
            return Err(CheckpointError::Corrupt {
                path,
                why: format!("larger than {MAX_BYTES} bytes"),
            });
        }
        let file: File = serde_json::from_slice(&bytes).map_err(|e| CheckpointError::Corrupt {
            path: path.clone(),
            why: e.to_string(),
        })?;
        if file.version != VERSION {
            return Err(CheckpointError::Corrupt {
                path,
                why: format!("version {} (this nicplug writes {VERSION})", file.version),
            });
        }
        Ok(Checkpoint {
            dir: dir.to_path_buf(),
            claims: file.claims,
        })
    }

    pub fn get(&self, uid: &str) -> Option<&PreparedClaim> {
        self.claims.get(uid)
    }

    pub fn claims(&self) -> impl Iterator<Item = &PreparedClaim> {
        self.claims.values()
    }

    /// The claim (other than `uid`) holding device `id`, if any.
    pub fn holder(&self, id: &str, uid: &str) -> Option<&PreparedClaim> {
        self.claims
            .values()
            .find(|c| c.claim.uid != uid && c.devices.iter().any(|d| d.id == id))
    }

    /// Record a claim and write the file; on failure the record is not kept.
    pub fn insert(&mut self, c: PreparedClaim) -> Result<(), CheckpointError> {
        let uid = c.claim.uid.clone();
        let old = self.claims.insert(uid.clone(), c);
        if let Err(e) = self.save() {
            match old {
                Some(o) => self.claims.insert(uid, o),
                None => self.claims.remove(&uid),
            };
            return Err(e);
        }
        Ok(())
    }

    /// Forget a claim and write the file; on failure the record is kept.
    pub fn remove(&mut self, uid: &str) -> Result<Option<PreparedClaim>, CheckpointError> {
        let Some(old) = self.claims.remove(uid) else {
            return Ok(None);
        };
        if let Err(e) = self.save() {
            self.claims.insert(uid.to_string(), old);
            return Err(e);
        }
        Ok(Some(old))
    }

    fn save(&self) -> Result<(), CheckpointError> {
        let file = File {
            version: VERSION,
            claims: self.claims.clone(),
        };
        let mut body = serde_json::to_vec_pretty(&file).expect("plain data serialises");
        body.push(b'\n');
        crate::files::write_atomically(&self.dir, FILE_NAME, &body).map_err(|source| {
            CheckpointError::Io {
                path: self.dir.join(FILE_NAME),
                err: source,
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claim(uid: &str, id: &str) -> PreparedClaim {
        PreparedClaim {
            claim: ClaimRef {
                namespace: "ns".into(),
                name: "c".into(),
                uid: uid.into(),
            },
            devices: vec![PreparedDevice {
                requests: vec!["r".into()],
                pool: "node1".into(),
                device: "pci-0000-3b-00-2".into(),
                id: id.into(),
                cdi_device_ids: vec!["nicplug.io/claim=x".into()],
            }],
            cdi_file: format!("nicplug.io-claim_{uid}.json"),
            device_info_files: Vec::new(),
        }
    }

    #[test]
    fn survives_a_reload_and_knows_holders() {
        let dir = tempfile::tempdir().unwrap();
        let mut cp = Checkpoint::load(dir.path()).unwrap();
        cp.insert(claim("a", "0000:3b:00.2")).unwrap();
        let again = Checkpoint::load(dir.path()).unwrap();
        assert_eq!(again.get("a"), Some(&claim("a", "0000:3b:00.2")));
        assert_eq!(again.holder("0000:3b:00.2", "b").unwrap().claim.uid, "a");
        assert!(again.holder("0000:3b:00.2", "a").is_none());
        cp.remove("a").unwrap();
        assert!(Checkpoint::load(dir.path()).unwrap().get("a").is_none());
        assert!(cp.remove("a").unwrap().is_none());
    }

    #[test]
    fn unreadable_checkpoint_stops_with_the_fix() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(FILE_NAME), "{not json").unwrap();
        let e = Checkpoint::load(dir.path()).unwrap_err().to_string();
        assert!(e.contains("not a checkpoint") && e.contains("fix:"), "{e}");
        // A link planted at the name is not followed.
        std::fs::remove_file(dir.path().join(FILE_NAME)).unwrap();
        std::fs::write(dir.path().join("elsewhere"), "{}").unwrap();
        std::os::unix::fs::symlink("elsewhere", dir.path().join(FILE_NAME)).unwrap();
        assert!(Checkpoint::load(dir.path()).is_err());
    }
}
