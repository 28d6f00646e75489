//! Reading a config file: bounded in size, never blocking.
//!
//! The file is a ConfigMap projection in a DaemonSet, but anything can stand at that path: a
//! FIFO would block a plain `read` forever and a huge file would be read whole. So the file is
//! opened non-blocking, must be a regular file, and at most [`MAX_CONFIG_BYTES`] are read.

use std::io::Read;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use super::{ConfigError, Format, MAX_CONFIG_BYTES};

/// The bytes of a config file, refused when it is not a regular file or larger than
/// [`MAX_CONFIG_BYTES`].
pub fn read_config_bytes(path: &Path) -> Result<Vec<u8>, ConfigError> {
    let io = |source| ConfigError::Read {
        path: path.to_owned(),
        source,
    };
    // Symlinks are followed: a ConfigMap mount is a chain of them (`..data`).
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open(path)
        .map_err(io)?;
    let meta = file.metadata().map_err(io)?;
    if !meta.file_type().is_file() {
        return Err(ConfigError::NotRegular {
            path: path.to_owned(),
        });
    }
    let too_large = || ConfigError::TooLarge {
        path: path.to_owned(),
        limit: MAX_CONFIG_BYTES,
    };
    if meta.len() > MAX_CONFIG_BYTES as u64 {
        return Err(too_large());
    }
    // The size may change between the stat and the read: read one byte past the cap to see.
    let mut bytes = Vec::with_capacity(meta.len() as usize);
    file.take(MAX_CONFIG_BYTES as u64 + 1)
        .read_to_end(&mut bytes)
        .map_err(io)?;
    if bytes.len() > MAX_CONFIG_BYTES {
        return Err(too_large());
    }
    Ok(bytes)
}

/// JSON for `.json`, YAML for `.yaml`/`.yml`. Any other name (operators mount the config as a
/// ConfigMap key named after the node, without extension) is JSON when its first character
/// is `{`, as every config an operator renders is, and YAML otherwise.
pub fn format_of(path: &Path, text: &str) -> Format {
    let ext = path.extension().and_then(|e| e.to_str());
    match ext.map(str::to_ascii_lowercase).as_deref() {
        Some("yaml" | "yml") => Format::Yaml,
        Some("json") => Format::Json,
        _ if text.trim_start().starts_with('{') => Format::Json,
        _ => Format::Yaml,
    }
}
