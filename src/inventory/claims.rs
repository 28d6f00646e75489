//! Who holds which device under which resource, as plain data: the inventory's input from the
//! front end that hands devices out (the device plugin's `holders`: kubelet's pod resources
//! answer and its own record). A device claimed under one resource is never advertised
//! Healthy by another pool, and one claimed that left its pool stays listed, Unhealthy.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Read;
use std::path::Path;

/// The device plugin's record of what it handed out, in its device-plugins directory; the DRA
/// driver reads it too, so neither front end hands out what the other holds.
pub const STATE_FILE: &str = "nicplug-holders.json";
/// A state file bigger than this is not ours.
const MAX_STATE_BYTES: u64 = 4 << 20;

/// What the pools need to know: device ID -> resources it is claimed under.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Claims {
    pub by_id: BTreeMap<String, BTreeSet<String>>,
    /// Nothing is known (the state file was unreadable and kubelet has not answered yet):
    /// every device counts as held by someone else.
    pub unknown: bool,
}

impl Claims {
    /// The resource, other than `resource`, that holds `id`, if any.
    pub fn elsewhere(&self, resource: &str, id: &str) -> Option<&str> {
        if self.unknown {
            return Some("(unknown: no record and no answer from kubelet)");
        }
        self.by_id
            .get(id)?
            .iter()
            .find(|r| r.as_str() != resource)
            .map(String::as_str)
    }

    /// Devices claimed under `resource`.
    pub fn of(&self, resource: &str) -> impl Iterator<Item = &str> {
        self.by_id
            .iter()
            .filter(move |(_, rs)| rs.contains(resource))
            .map(|(id, _)| id.as_str())
    }
}

#[derive(serde::Deserialize)]
struct StateFile {
    version: u32,
    claims: Vec<StateClaim>,
}

#[derive(serde::Deserialize)]
struct StateClaim {
    resource: String,
    id: String,
}

/// The `(id, resource)` pairs in the state file; empty when there is none.
pub fn read_state(path: &Path) -> Result<Vec<(String, String)>, String> {
    use std::os::unix::fs::OpenOptionsExt;
    let file = match std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(path)
    {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e.to_string()),
    };
    let meta = file.metadata().map_err(|e| e.to_string())?;
    if !meta.is_file() {
        return Err("not a regular file".into());
    }
    let mut text = String::new();
    file.take(MAX_STATE_BYTES + 1)
        .read_to_string(&mut text)
        .map_err(|e| e.to_string())?;
    if text.len() as u64 > MAX_STATE_BYTES {
        return Err(format!("larger than {MAX_STATE_BYTES} bytes"));
    }
    let doc: StateFile = serde_json::from_str(&text).map_err(|e| e.to_string())?;
    if doc.version != 1 {
        return Err(format!("unknown version {}", doc.version));
    }
    Ok(doc.claims.into_iter().map(|c| (c.id, c.resource)).collect())
}
