//! Human names for Mellanox / NVIDIA device IDs (vendor 0x15b3), after the PCI ID database and
//! the mlx5 ID table in DPDK and rdma-core.

pub const MELLANOX: u16 = 0x15b3;

const MODELS: &[(u16, &str)] = &[
    (0x1003, "ConnectX-3"),
    (0x1004, "ConnectX-3 VF"),
    (0x1007, "ConnectX-3 Pro"),
    (0x1011, "Connect-IB"),
    (0x1012, "Connect-IB VF"),
    (0x1013, "ConnectX-4"),
    (0x1014, "ConnectX-4 VF"),
    (0x1015, "ConnectX-4 Lx"),
    (0x1016, "ConnectX-4 Lx VF"),
    (0x1017, "ConnectX-5"),
    (0x1018, "ConnectX-5 VF"),
    (0x1019, "ConnectX-5 Ex"),
    (0x101a, "ConnectX-5 Ex VF"),
    (0x101b, "ConnectX-6"),
    (0x101c, "ConnectX-6 VF"),
    (0x101d, "ConnectX-6 Dx"),
    (0x101e, "ConnectX VF"),
    (0x101f, "ConnectX-6 Lx"),
    (0x1021, "ConnectX-7"),
    (0x1023, "ConnectX-8"),
    (0x1025, "ConnectX-9"),
    (0x1027, "ConnectX-10"),
    (0x2101, "ConnectX-10 NVLink-C2C"),
    (0xa2d2, "BlueField"),
    (0xa2d3, "BlueField VF"),
    (0xa2d6, "BlueField-2"),
    (0xa2dc, "BlueField-3"),
    (0xa2df, "BlueField-4"),
];

/// Model name for a known Mellanox/NVIDIA function, `None` for anything else.
pub fn model_name(vendor: u16, device: u16) -> Option<&'static str> {
    if vendor != MELLANOX {
        return None;
    }
    MODELS
        .iter()
        .find(|(id, _)| *id == device)
        .map(|(_, name)| *name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_and_unknown_ids() {
        assert_eq!(model_name(0x15b3, 0x101d), Some("ConnectX-6 Dx"));
        assert_eq!(model_name(0x15b3, 0xa2dc), Some("BlueField-3"));
        assert_eq!(model_name(0x15b3, 0xffff), None);
        assert_eq!(model_name(0x8086, 0x101d), None);
    }

    #[test]
    fn table_is_sorted_and_unique() {
        assert!(MODELS.windows(2).all(|w| w[0].0 < w[1].0));
    }
}
