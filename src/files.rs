//! Files the daemon writes for others to read (CDI specs, CNI device-info files).
//!
//! Both directories may be writable by others (a CNI, an operator's tooling), so nothing here
//! trusts what is already in them: a temp file is created with `O_CREAT | O_EXCL` under a random
//! name (neither a planted symlink nor a FIFO can stand at a name nobody can predict, and an
//! exclusive create never follows or opens one), and the rename that publishes it replaces
//! whatever is at the final name without following it.

use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

/// Temp files are `.nicplug.<random>.tmp`: one pattern for every directory, so leftovers of a
/// killed daemon are recognised ([`remove_stale_temps`]).
const TEMP_PREFIX: &str = ".nicplug.";
const TEMP_SUFFIX: &str = ".tmp";

/// Write `dir/name` through a temp file in the same directory and a rename, so a reader sees
/// the old file or the new one, never part of one; on failure (a full disk) the temp file is
/// removed. Not fsynced: both kinds of file are rewritten when the daemon starts or allocates
/// again, so surviving a power loss would buy nothing.
pub fn write_atomically(dir: &Path, name: &str, body: &[u8]) -> std::io::Result<()> {
    let existed = dir.is_dir();
    if let Err(e) = std::fs::create_dir_all(dir) {
        // create_dir_all says "File exists" when a file is in the way: say what is wrong.
        return Err(match dir.metadata() {
            Ok(m) if !m.is_dir() => std::io::Error::other("not a directory"),
            _ => e,
        });
    }
    if !existed {
        // Readable by the CNI and the runtime whatever umask was in force: a plugin socket
        // bound on another thread at this moment narrows it (see `serve::server`).
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755))?;
    }
    // Dropping the temp file on any error below removes it.
    let mut tmp = tempfile::Builder::new()
        .prefix(TEMP_PREFIX)
        .suffix(TEMP_SUFFIX)
        .rand_bytes(12)
        .tempfile_in(dir)?;
    tmp.write_all(body)?;
    tmp.as_file()
        .set_permissions(std::fs::Permissions::from_mode(0o644))?;
    tmp.persist(dir.join(name)).map_err(|e| e.error)?;
    Ok(())
}

/// Whether `name` is one of [`write_atomically`]'s temp files.
pub fn is_temp_name(name: &str) -> bool {
    name.starts_with(TEMP_PREFIX) && name.ends_with(TEMP_SUFFIX)
}

/// Remove temp files a killed daemon left in `dir` (only one `serve` runs per node, so none is
/// in use); returns their names. A missing directory has none.
pub fn remove_stale_temps(dir: &Path) -> std::io::Result<Vec<String>> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let mut removed = Vec::new();
    for entry in entries {
        let entry = entry?;
        let Some(name) = entry.file_name().to_str().map(str::to_owned) else {
            continue;
        };
        if !is_temp_name(&name) {
            continue;
        }
        // `remove_file` unlinks a symlink or FIFO itself, never what a link points to.
        match std::fs::remove_file(entry.path()) {
            Ok(()) => removed.push(name),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
    }
    removed.sort();
    Ok(removed)
}

/// Remove `dir/name`, one of the files written here; true when it existed. `remove_file` unlinks
/// whatever stands at the name (a link someone planted included), never what a link points to.
pub fn remove(dir: &Path, name: &str) -> std::io::Result<bool> {
    if name.is_empty() || name.contains('/') || name == "." || name == ".." {
        return Err(std::io::Error::other(format!(
            "{name:?} is not a file name"
        )));
    }
    match std::fs::remove_file(dir.join(name)) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(e),
    }
}

/// What tells one version of a file from the next without reading it: `(inode, size, mtime)`
/// of the name itself (a link is not followed); `None` when nothing is there.
pub fn stamp(path: &Path) -> Option<(u64, u64, i64, i64)> {
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::symlink_metadata(path).ok()?;
    Some((m.ino(), m.size(), m.mtime(), m.mtime_nsec()))
}
