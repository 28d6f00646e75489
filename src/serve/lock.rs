//! One `serve` per kubelet: an exclusive `flock` on the device-plugins directory itself.
//!
//! A lock file inside the directory would not do: kubelet deletes the directory's contents
//! when it starts, and a second daemon would then lock a new file while the first still holds
//! the deleted one. The directory stays. Without the lock, a second daemon would take over the
//! first one's sockets and, on its way out, delete the first one's CDI specs.

use std::fs::File;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use rustix::fs::{FlockOperation, flock};

/// Held for as long as the daemon runs; the kernel releases it when the process ends, however
/// it ends.
pub struct DirLock {
    _dir: File,
}

#[derive(Debug, thiserror::Error)]
pub enum LockError {
    #[error(
        "another nicplug serve already runs for {}: only one may serve a kubelet (stop the other \
         one, or give this one its own --kubelet-dir)",
        dir.display()
    )]
    Held { dir: std::path::PathBuf },
    #[error("cannot lock {}: {source}", dir.display())]
    Io {
        dir: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// Take the lock on `dir` now, or fail at once if another process holds it.
pub fn lock_dir(dir: &Path) -> Result<DirLock, LockError> {
    let io = |source| LockError::Io {
        dir: dir.to_owned(),
        source,
    };
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_DIRECTORY | libc::O_CLOEXEC)
        .open(dir)
        .map_err(io)?;
    match flock(&file, FlockOperation::NonBlockingLockExclusive) {
        Ok(()) => Ok(DirLock { _dir: file }),
        Err(e) if e == rustix::io::Errno::WOULDBLOCK => Err(LockError::Held {
            dir: dir.to_owned(),
        }),
        Err(e) => Err(io(e.into())),
    }
}

/// Remove every `nicplug-*.sock` socket in `dir`: with the lock held, none belongs to a live
/// daemon, and one left by a killed daemon would make `nicplug probe` fail forever. Returns
/// the names removed.
pub fn remove_stale_sockets(dir: &Path) -> std::io::Result<Vec<String>> {
    use std::os::unix::fs::FileTypeExt;
    let mut removed = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let Some(name) = entry.file_name().to_str().map(str::to_owned) else {
            continue;
        };
        let is_socket = entry.file_type().is_ok_and(|t| t.is_socket());
        if name.starts_with("nicplug-") && name.ends_with(".sock") && is_socket {
            match std::fs::remove_file(entry.path()) {
                Ok(()) => removed.push(name),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            }
        }
    }
    removed.sort();
    Ok(removed)
}
