//! The small readers every part of discovery shares: bounded attribute reads, parsing that
//! names the file, symlink names, directory listings, char device numbers and the name checks
//! that guard every path built from sysfs data.

use super::layout;
use super::model::CharDev;
use std::fs;
use std::io::{self, Read};
use std::path::{Path, PathBuf};

/// sysfs attributes are a page at most; anything longer is not a sysfs attribute.
const MAX_ATTR_BYTES: u64 = 4096;

/// Why a function is skipped: the file and what was wrong with it.
#[derive(Debug)]
pub(super) struct Skip {
    pub(super) file: PathBuf,
    pub(super) reason: String,
}

impl Skip {
    pub(super) fn new(file: &Path, reason: impl Into<String>) -> Self {
        Skip {
            file: file.to_path_buf(),
            reason: reason.into(),
        }
    }

    pub(super) fn io(file: &Path, err: &io::Error) -> Self {
        Skip::new(file, err.to_string())
    }
}

pub(super) type Res<T> = Result<T, Skip>;

/// A char device from its sysfs directory: number from `dev`, never computed.
pub(super) fn char_dev(dir: &Path, name: &str) -> Res<CharDev> {
    if !layout::is_rdma_node_name(name) {
        return Err(Skip::new(dir, "not an RDMA char device name"));
    }
    let file = dir.join("dev");
    let (major, minor) = parse_dev(&file, &required(&file)?)?;
    Ok(CharDev {
        path: layout::rdma_node_path(name),
        name: name.to_string(),
        major,
        minor,
    })
}

pub(super) fn parse_dev(file: &Path, s: &str) -> Res<(u32, u32)> {
    layout::parse_dev(s).ok_or_else(|| Skip::new(file, format!("{s:?} is not MAJOR:MINOR")))
}

// ---- small readers -------------------------------------------------------------------------

/// At most [`MAX_ATTR_BYTES`] of a regular file. The last component must not be a symlink and
/// the file must be a regular file: a FIFO would block the open (and discovery) forever, a link
/// to a char device such as `/dev/zero` or to a file outside the root is not a sysfs attribute.
pub(super) fn read_bounded(path: &Path) -> io::Result<String> {
    use std::os::unix::fs::OpenOptionsExt;
    let flags = rustix::fs::OFlags::NOFOLLOW | rustix::fs::OFlags::NONBLOCK;
    let file = fs::OpenOptions::new()
        .read(true)
        .custom_flags(flags.bits() as i32)
        .open(path)
        .map_err(|e| {
            if e.raw_os_error() == Some(rustix::io::Errno::LOOP.raw_os_error()) {
                io::Error::other("is a symbolic link, not an attribute file")
            } else {
                e
            }
        })?;
    if !file.metadata()?.is_file() {
        return Err(io::Error::other("not a regular file"));
    }
    let mut s = String::new();
    file.take(MAX_ATTR_BYTES).read_to_string(&mut s)?;
    Ok(s)
}

/// `path` must be a real directory, not a symlink: every directory below a function's own
/// (canonical) directory is walked by name, and a symlink there could lead out of the root.
pub(super) fn real_dir(path: &Path) -> Res<()> {
    match fs::symlink_metadata(path) {
        Ok(m) if m.is_dir() => Ok(()),
        Ok(m) if m.file_type().is_symlink() => {
            Err(Skip::new(path, "is a symbolic link, not a directory"))
        }
        Ok(_) => Err(Skip::new(path, "is not a directory")),
        Err(e) => Err(Skip::io(path, &e)),
    }
}

/// An attribute, trimmed; `None` when the file does not exist.
pub(super) fn attr(path: &Path) -> Res<Option<String>> {
    match read_bounded(path) {
        Ok(s) => Ok(Some(s.trim().to_string())),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(Skip::io(path, &e)),
    }
}

pub(super) fn required(path: &Path) -> Res<String> {
    attr(path)?.ok_or_else(|| Skip::new(path, "required file is missing"))
}

pub(super) fn parse<T: std::str::FromStr>(path: &Path, s: &str) -> Res<T> {
    s.trim()
        .parse()
        .map_err(|_| Skip::new(path, format!("cannot parse {s:?}")))
}

pub(super) fn parse_hex(path: &Path, s: &str) -> Res<u32> {
    let digits = s.strip_prefix("0x").unwrap_or(s);
    u32::from_str_radix(digits, 16).map_err(|_| Skip::new(path, format!("{s:?} is not hex")))
}

pub(super) fn required_hex(path: &Path) -> Res<u32> {
    parse_hex(path, &required(path)?)
}

pub(super) fn to_u16(path: &Path, v: u32) -> Res<u16> {
    u16::try_from(v).map_err(|_| Skip::new(path, format!("{v:#x} is not a 16-bit ID")))
}

pub(super) fn optional_u16(path: &Path) -> Res<Option<u16>> {
    match attr(path)? {
        Some(s) => Ok(Some(to_u16(path, parse_hex(path, &s)?)?)),
        None => Ok(None),
    }
}

/// The last component of a symlink's target (`driver -> .../drivers/mlx5_core` gives
/// `mlx5_core`); `None` when there is no link. Only names are taken from link targets, so a
/// hostile target cannot steer a path.
pub(super) fn link_name(path: &Path) -> Res<Option<String>> {
    match fs::read_link(path) {
        Ok(target) => target
            .file_name()
            .and_then(|n| n.to_str())
            .map(|n| Some(n.to_string()))
            .ok_or_else(|| Skip::new(path, "link target has no usable name")),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(Skip::io(path, &e)),
    }
}

/// Sorted UTF-8 entry names of a directory; empty when it does not exist. A symlink in place of
/// the directory is refused (see [`real_dir`]).
pub(super) fn list_names(dir: &Path) -> Res<Vec<String>> {
    match fs::symlink_metadata(dir) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(Skip::io(dir, &e)),
        Ok(m) if m.file_type().is_symlink() => {
            return Err(Skip::new(dir, "is a symbolic link, not a directory"));
        }
        Ok(_) => {}
    }
    let entries = match fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(Skip::io(dir, &e)),
    };
    let mut names = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| Skip::io(dir, &e))?;
        let name = entry
            .file_name()
            .into_string()
            .map_err(|_| Skip::new(&entry.path(), "entry name is not UTF-8"))?;
        names.push(name);
    }
    names.sort();
    Ok(names)
}

/// `dddd:bb:dd.f` in lower-case hex.
pub fn is_bdf(s: &str) -> bool {
    let b = s.as_bytes();
    let hex = |r: std::ops::Range<usize>| {
        b[r].iter()
            .all(|c| c.is_ascii_digit() || (b'a'..=b'f').contains(c))
    };
    b.len() == 12
        && b[4] == b':'
        && b[7] == b':'
        && b[10] == b'.'
        && hex(0..4)
        && hex(5..7)
        && hex(8..10)
        && (b'0'..=b'7').contains(&b[11])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bdf_shapes() {
        assert!(is_bdf("0000:3b:00.2"));
        assert!(!is_bdf("0000:3B:00.2"));
        assert!(!is_bdf("0000:3b:00.8"));
        assert!(!is_bdf("../../etc/x"));
        assert!(!is_bdf("0000:3b:00.2x"));
    }
}
