//! Files the daemon writes for others to read (CDI specs, CNI device-info files).

use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

/// Write `dir/name` through a temp file in the same directory and a rename, so a reader sees
/// the old file or the new one, never part of one; on failure (a full disk) the temp file is
/// removed. Not fsynced: both kinds of file are rewritten when the daemon starts or allocates
/// again, so surviving a power loss would buy nothing.
pub fn write_atomically(dir: &Path, name: &str, body: &[u8]) -> std::io::Result<()> {
    if let Err(e) = std::fs::create_dir_all(dir) {
        // create_dir_all says "File exists" when a file is in the way: say what is wrong.
        return Err(match dir.metadata() {
            Ok(m) if !m.is_dir() => std::io::Error::other("not a directory"),
            _ => e,
        });
    }
    let tmp = dir.join(format!(".{name}.{}.tmp", std::process::id()));
    let result = (|| {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(body)?;
        f.set_permissions(std::fs::Permissions::from_mode(0o644))?;
        std::fs::rename(&tmp, dir.join(name))
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}
