//! A device's identity and its renderings: kubelet's device ID, the CDI device name and the
//! DNS label a DRA ResourceSlice names it by. Each rendering maps one-to-one back to the ID.

use crate::host::{is_bdf, is_sf_name};
use std::fmt;

/// A function nicplug can hand out.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum DeviceId {
    /// A PCI function by its address, `0000:3b:00.2` (lower-case hex, as sysfs names it).
    Pci(String),
    /// A scalable function by its auxiliary index: `mlx5_core.sf.N`.
    Sf(u32),
}

const SF_PREFIX: &str = "mlx5_core.sf.";

impl DeviceId {
    /// Parse kubelet's rendering (the ID the device plugin advertises).
    pub fn parse(id: &str) -> Option<Self> {
        if is_bdf(id) {
            return Some(DeviceId::Pci(id.to_string()));
        }
        if is_sf_name(id) {
            return id[SF_PREFIX.len()..].parse().ok().map(DeviceId::Sf);
        }
        None
    }

    /// The device plugin's ID, also the CDI device name: `0000:3b:00.2`, `mlx5_core.sf.4`.
    pub fn kubelet(&self) -> String {
        self.to_string()
    }

    /// A DNS label (RFC 1123, at most 63 characters), as DRA device names must be:
    /// `pci-0000-3b-00-2`, `sf-4`. `:` and `.` become `-`; the fixed shape keeps it reversible.
    pub fn dns_label(&self) -> String {
        match self {
            DeviceId::Pci(a) => format!("pci-{}", a.replace([':', '.'], "-")),
            DeviceId::Sf(n) => format!("sf-{n}"),
        }
    }

    /// The inverse of [`DeviceId::dns_label`].
    pub fn from_dns_label(label: &str) -> Option<Self> {
        if let Some(n) = label.strip_prefix("sf-") {
            return Self::parse(&format!("{SF_PREFIX}{n}"));
        }
        let a = label.strip_prefix("pci-")?;
        if a.len() != 12
            || a.as_bytes()[4] != b'-'
            || a.as_bytes()[7] != b'-'
            || a.as_bytes()[10] != b'-'
        {
            return None;
        }
        let addr = format!("{}:{}:{}.{}", &a[0..4], &a[5..7], &a[8..10], &a[11..]);
        Self::parse(&addr)
    }
}

impl fmt::Display for DeviceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DeviceId::Pci(a) => f.write_str(a),
            DeviceId::Sf(n) => write!(f, "{SF_PREFIX}{n}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renderings_round_trip() {
        for id in [
            "0000:3b:00.2",
            "0000:af:1f.7",
            "mlx5_core.sf.4",
            "mlx5_core.sf.4294967295",
        ] {
            let d = DeviceId::parse(id).unwrap();
            assert_eq!(d.kubelet(), id);
            let label = d.dns_label();
            assert!(
                label.len() <= 63
                    && label
                        .bytes()
                        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'-')
            );
            assert_eq!(DeviceId::from_dns_label(&label), Some(d));
        }
        for bad in [
            "",
            "0000:3B:00.2",
            "mlx5_core.sf.",
            "mlx5_core.sf.x",
            "0000:3b:00.8",
        ] {
            assert_eq!(DeviceId::parse(bad), None, "{bad}");
        }
        for bad in ["pci-0000-3b-00", "pci-0000:3b:00.2", "sf-", "sf-01x", "x-1"] {
            assert_eq!(DeviceId::from_dns_label(bad), None, "{bad}");
        }
    }
}
