//! The procfs files the doctor reads about its own process and network namespace, each parsed
//! by a pure function of the text so the parsers are tested without a kernel.

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::FileExt;
use std::path::Path;

pub const CAP_NET_ADMIN: u32 = 12;
pub const CAP_NET_RAW: u32 = 13;
pub const CAP_IPC_LOCK: u32 = 14;
pub const CAP_SYS_RAWIO: u32 = 17;
pub const CAP_SYS_ADMIN: u32 = 21;

/// One line of `/proc/self/mountinfo`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mount {
    pub id: u32,
    /// `MAJ:MIN` of the filesystem (distinct per sysfs superblock, hence per network namespace).
    pub dev: String,
    /// The directory of the filesystem that is mounted (`/` for a whole sysfs; deeper for a bind
    /// of part of it).
    pub root: String,
    pub mount_point: String,
    pub options: String,
    pub fs_type: String,
    pub source: String,
    pub super_options: String,
}

impl Mount {
    pub fn read_only(&self) -> bool {
        self.options.split(',').any(|o| o == "ro")
            || self.super_options.split(',').any(|o| o == "ro")
    }
}

/// Undo mountinfo's octal escapes (`\040` for a space, `\011`, `\012`, `\134`).
fn unescape(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            out.push((b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0'));
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Every well-formed line of a mountinfo file, in order (later mounts stack over earlier ones).
pub fn parse_mountinfo(text: &str) -> Vec<Mount> {
    text.lines()
        .filter_map(|line| {
            let (left, right) = line.split_once(" - ")?;
            let l: Vec<&str> = left.split(' ').collect();
            let r: Vec<&str> = right.split(' ').collect();
            if l.len() < 6 || r.len() < 2 {
                return None;
            }
            Some(Mount {
                id: l[0].parse().ok()?,
                dev: l[2].to_string(),
                root: unescape(l[3]),
                mount_point: unescape(l[4]),
                options: l[5].to_string(),
                fs_type: r[0].to_string(),
                source: unescape(r[1]),
                super_options: r.get(2).unwrap_or(&"").to_string(),
            })
        })
        .collect()
}

/// `CapEff` of a `/proc/<pid>/status` file.
pub fn parse_cap_eff(text: &str) -> Option<u64> {
    text.lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
}

pub fn has_cap(caps: u64, cap: u32) -> bool {
    caps >> cap & 1 == 1
}

/// A resource limit's soft value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Limit {
    Unlimited,
    Bytes(u64),
}

impl std::fmt::Display for Limit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Limit::Unlimited => f.write_str("unlimited"),
            Limit::Bytes(b) => f.write_str(&human_bytes(*b)),
        }
    }
}

pub fn human_bytes(b: u64) -> String {
    const UNITS: [(&str, u64); 3] = [("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)];
    for (unit, size) in UNITS {
        if b >= size && b.is_multiple_of(size) {
            return format!("{} {unit}", b / size);
        }
    }
    format!("{b} bytes")
}

/// The soft `Max locked memory` limit of a `/proc/<pid>/limits` file.
pub fn parse_memlock(text: &str) -> Option<Limit> {
    let rest = text
        .lines()
        .find_map(|l| l.strip_prefix("Max locked memory"))?;
    match rest.split_whitespace().next()? {
        "unlimited" => Some(Limit::Unlimited),
        n => n.parse().ok().map(Limit::Bytes),
    }
}

/// A netdev of this network namespace with its byte counters, from `/proc/net/dev`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetDevCounters {
    pub name: String,
    pub rx_bytes: u64,
    pub tx_bytes: u64,
}

pub fn parse_net_dev(text: &str) -> Vec<NetDevCounters> {
    text.lines()
        .skip(2)
        .filter_map(|l| {
            let (name, rest) = l.rsplit_once(':')?;
            let n: Vec<u64> = rest
                .split_whitespace()
                .map(|v| v.parse().ok())
                .collect::<Option<_>>()?;
            (n.len() >= 16).then(|| NetDevCounters {
                name: name.trim().to_string(),
                rx_bytes: n[0],
                tx_bytes: n[8],
            })
        })
        .collect()
}

/// `key: value [kB]` lines of `/proc/meminfo`, values as numbers.
pub fn parse_meminfo(text: &str) -> BTreeMap<String, u64> {
    text.lines()
        .filter_map(|l| {
            let (k, v) = l.split_once(':')?;
            Some((
                k.trim().to_string(),
                v.split_whitespace().next()?.parse().ok()?,
            ))
        })
        .collect()
}

/// `AT_PAGESZ` from `/proc/self/auxv` (native-endian pairs of machine words).
pub fn parse_auxv_page_size(bytes: &[u8]) -> Option<u64> {
    const AT_PAGESZ: u64 = 6;
    const W: usize = std::mem::size_of::<usize>();
    bytes.chunks_exact(2 * W).find_map(|pair| {
        let word = |b: &[u8]| usize::from_ne_bytes(b.try_into().expect("W bytes")) as u64;
        (word(&pair[..W]) == AT_PAGESZ).then(|| word(&pair[W..]))
    })
}

/// What `/proc/self/pagemap` says about one resident page of this process.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Pagemap {
    /// A non-zero page frame number: physical addresses are readable (CAP_SYS_ADMIN).
    Readable,
    /// Present, but the kernel zeroed the frame number (no CAP_SYS_ADMIN, Linux >= 4.0).
    Zeroed,
    /// The page is not reported present: no conclusion.
    NotPresent,
    /// The file could not be read.
    Unreadable(String),
}

/// The pagemap entry of virtual address `addr` (bit 63: present; bits 0-54: PFN).
pub fn read_pagemap(file: &Path, addr: u64, page_size: u64) -> Pagemap {
    let mut entry = [0u8; 8];
    let read =
        fs::File::open(file).and_then(|f| f.read_exact_at(&mut entry, addr / page_size.max(1) * 8));
    if let Err(e) = read {
        return Pagemap::Unreadable(e.to_string());
    }
    let v = u64::from_le_bytes(entry);
    match (v >> 63 & 1 == 1, v & ((1 << 55) - 1)) {
        (false, _) => Pagemap::NotPresent,
        (true, 0) => Pagemap::Zeroed,
        (true, _) => Pagemap::Readable,
    }
}

/// A pagemap entry as the kernel writes it, for stand-in files in tests: present, with `pfn`.
pub fn pagemap_entry(pfn: u64) -> [u8; 8] {
    ((1u64 << 63) | pfn).to_le_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mountinfo_lines() {
        let text = "23 27 0:22 / /sys rw,relatime - sysfs sysfs rw\n\
            88 80 0:40 /devices/pci0000:3a/0000:3b:00.2/infiniband/mlx5_2/ports/1 \
            /sys/devices/pci0000:3a/0000:3b:00.2/infiniband/mlx5_2/ports/1 ro,relatime \
            master:7 - sysfs sysfs rw\n\
            90 80 0:50 / /mnt/with\\040space ro shared:1 - hugetlbfs nodev rw,pagesize=2M\n\
            garbage\n";
        let m = parse_mountinfo(text);
        assert_eq!(m.len(), 3);
        assert_eq!(m[0].mount_point, "/sys");
        assert_eq!(m[0].root, "/");
        assert!(!m[0].read_only());
        assert_eq!(m[1].dev, "0:40");
        assert!(m[1].read_only());
        assert!(m[1].root.ends_with("ports/1"));
        assert_eq!(m[2].mount_point, "/mnt/with space");
        assert_eq!(m[2].fs_type, "hugetlbfs");
        assert_eq!(m[2].super_options, "rw,pagesize=2M");
    }

    #[test]
    fn status_limits_net_dev_meminfo() {
        let caps = parse_cap_eff("Name:\tx\nCapEff:\t00000000a80435fb\n").unwrap();
        assert!(has_cap(caps, CAP_NET_RAW));
        assert!(!has_cap(caps, CAP_IPC_LOCK));
        assert!(!has_cap(caps, CAP_SYS_ADMIN));
        let limits = "Limit                     Soft Limit           Hard Limit           Units\n\
            Max locked memory         8388608              8388608              bytes\n";
        assert_eq!(parse_memlock(limits), Some(Limit::Bytes(8 << 20)));
        assert_eq!(Limit::Bytes(8 << 20).to_string(), "8 MiB");
        assert_eq!(
            parse_memlock(
                "Max locked memory         unlimited            unlimited            bytes"
            ),
            Some(Limit::Unlimited)
        );
        let dev = "Inter-|   Receive\n face |bytes\n    lo:    3193      29    0    0    0     0          0         0     3194      29    0    0    0     0       0          0\n";
        assert_eq!(
            parse_net_dev(dev),
            [NetDevCounters {
                name: "lo".into(),
                rx_bytes: 3193,
                tx_bytes: 3194
            }]
        );
        let mi = parse_meminfo("HugePages_Free:      12\nHugepagesize:       2048 kB\n");
        assert_eq!(mi["HugePages_Free"], 12);
        assert_eq!(mi["Hugepagesize"], 2048);
    }

    #[test]
    fn auxv_page_size() {
        let mut v = Vec::new();
        for (k, val) in [(33usize, 1usize), (6, 16384), (0, 0)] {
            v.extend_from_slice(&k.to_ne_bytes());
            v.extend_from_slice(&val.to_ne_bytes());
        }
        assert_eq!(parse_auxv_page_size(&v), Some(16384));
        assert_eq!(parse_auxv_page_size(&[]), None);
    }
}
