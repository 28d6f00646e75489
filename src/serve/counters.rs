//! Bounded reads of the per-function counters the metrics endpoint exposes: an RDMA port's
//! `hw_counters/*` and `counters/*`, a netdev's `statistics/*`. Read at every scrape, never kept.

use std::io::Read;
use std::path::Path;

/// At most this many counter files per directory (mlx5 has about 40 in `hw_counters`).
pub const MAX_FILES_PER_DIR: usize = 256;
/// A counter file is one decimal number and a newline; anything longer is not one.
const MAX_FILE_BYTES: u64 = 32;

/// The netdev statistics exposed, each as `nicplug_netdev_<name>_total`.
pub const NETDEV_STATS: [&str; 6] = [
    "rx_bytes",
    "tx_bytes",
    "rx_packets",
    "tx_packets",
    "rx_dropped",
    "tx_dropped",
];

/// One counter file as a number; `None` when absent, too long or not a number.
pub fn read_counter(path: &Path) -> Option<u64> {
    let mut text = String::new();
    std::fs::File::open(path)
        .ok()?
        .take(MAX_FILE_BYTES + 1)
        .read_to_string(&mut text)
        .ok()?;
    if text.len() as u64 > MAX_FILE_BYTES {
        return None;
    }
    text.trim().parse().ok()
}

/// `(name, value)` of every counter file in `dir` (at most [`MAX_FILES_PER_DIR`] are looked
/// at), sorted by name. Names other than `[A-Za-z0-9_]+` and unreadable files are left out.
pub fn read_dir(dir: &Path) -> Vec<(String, u64)> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut out: Vec<(String, u64)> = entries
        .take(MAX_FILES_PER_DIR)
        .filter_map(|e| {
            let name = e.ok()?.file_name().into_string().ok()?;
            let plain = !name.is_empty()
                && name.len() <= 64
                && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
            if !plain {
                return None;
            }
            let value = read_counter(&dir.join(&name))?;
            Some((name, value))
        })
        .collect();
    out.sort();
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_numbers_and_skips_the_rest() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        std::fs::write(d.join("out_of_buffer"), "42\n").unwrap();
        std::fs::write(d.join("rx_write_requests"), "7").unwrap();
        std::fs::write(d.join("garbled"), "n/a\n").unwrap();
        std::fs::write(d.join("huge"), "1".repeat(100)).unwrap();
        std::fs::write(d.join("bad name"), "1\n").unwrap();
        assert_eq!(
            read_dir(d),
            vec![
                ("out_of_buffer".to_string(), 42),
                ("rx_write_requests".to_string(), 7)
            ]
        );
        assert_eq!(read_counter(&d.join("absent")), None);
        assert!(read_dir(&d.join("absent")).is_empty());
    }

    #[test]
    fn caps_files_per_directory() {
        let dir = tempfile::tempdir().unwrap();
        for i in 0..MAX_FILES_PER_DIR + 50 {
            std::fs::write(dir.path().join(format!("c{i}")), "1\n").unwrap();
        }
        assert_eq!(read_dir(dir.path()).len(), MAX_FILES_PER_DIR);
    }
}
