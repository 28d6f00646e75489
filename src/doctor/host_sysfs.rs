//! Check 1, field failure 1: is the sysfs at /sys this pod's own, or another network
//! namespace's (the host's `/sys` mounted into the pod)?

use super::checks::list;
use super::procfs::{self, Mount};
use super::{Check, CheckId, Input, Pod};
use crate::host::layout;
use std::collections::BTreeMap;
use std::fs;

const SYSFS_FIX: &str = "remove the hostPath volume of /sys (or of any path under it) from the \
    pod spec: the runtime mounts the pod's own sysfs, which shows this namespace's netdevs, and \
    nicplug bind-mounts the RDMA port directories DPDK reads";

/// Names joined with `, `, at most eight, then how many more.
fn some(names: &[&str]) -> String {
    match names.len() {
        0..=8 => names.join(", "),
        n => format!("{} and {} more", names[..8].join(", "), n - 8),
    }
}

/// nicplug's own counters mount: a bind of `<root>`, an RDMA port directory
/// (`/devices/.../infiniband/<ib>/ports/<n>`), at `/sys<root>`.
fn is_counters_mount(m: &Mount) -> bool {
    let parts: Vec<&str> = m.root.trim_start_matches('/').split('/').collect();
    m.mount_point == format!("/sys{}", m.root)
        && m.root.starts_with('/')
        && layout::check_port_dir(&parts).is_ok()
}

/// Check 1: the sysfs at the sysfs root shows this network namespace. A sysfs instance shows
/// the netdevs of the namespace that mounted it; the pod's `/proc/net/dev` those of its own.
pub(super) fn check(input: &Input, pod: &Pod) -> Check {
    let sysfs = input.paths.sysfs();
    // sysfs counters first, /proc second: the same device never counts backwards.
    let in_sysfs: BTreeMap<String, (Option<u64>, Option<u64>)> = list(&sysfs.at(layout::CLASS_NET))
        .into_iter()
        .map(|n| {
            let stats = sysfs.class_net_statistics(&n);
            let stat = |f: &str| layout::read_counter(&stats.join(f));
            let v = (stat("rx_bytes"), stat("tx_bytes"));
            (n, v)
        })
        .collect();
    let proc_dev = input.paths.proc_root.join("net/dev");
    let here = match fs::read_to_string(&proc_dev) {
        Ok(t) => procfs::parse_net_dev(&t),
        Err(e) => {
            return Check::warn(
                CheckId::HostSysfs,
                None,
                format!("cannot read {}: {e}", proc_dev.display()),
                "mount procfs at /proc (the runtime does by default)".into(),
            );
        }
    };

    let mut evidence = Vec::new();
    let foreign: Vec<&str> = in_sysfs
        .keys()
        .filter(|n| !here.iter().any(|h| &h.name == *n))
        .map(String::as_str)
        .collect();
    if !foreign.is_empty() {
        evidence.push(format!(
            "it shows {} (not in this namespace)",
            some(&foreign)
        ));
    }
    let absent: Vec<&str> = here
        .iter()
        .filter(|h| !in_sysfs.contains_key(&h.name))
        .map(|h| h.name.as_str())
        .collect();
    if !absent.is_empty() {
        evidence.push(format!("it lacks {} (in this namespace)", some(&absent)));
    }
    let backwards: Vec<&str> = here
        .iter()
        .filter(|h| match in_sysfs.get(&h.name) {
            Some((rx, tx)) => {
                rx.is_some_and(|rx| h.rx_bytes < rx) || tx.is_some_and(|tx| h.tx_bytes < tx)
            }
            None => false,
        })
        .map(|h| h.name.as_str())
        .collect();
    if !backwards.is_empty() {
        evidence.push(format!(
            "its {} byte counters exceed this namespace's (another device of the same name)",
            some(&backwards)
        ));
    }

    let mut mount_note = String::new();
    if let Ok(mounts) = &pod.mounts {
        let top = mounts
            .iter()
            .rev()
            .find(|m| m.fs_type == "sysfs" && m.mount_point == "/sys");
        if let Some(top) = top {
            mount_note = format!(
                "mountinfo: sysfs {} at /sys, root {}, {}",
                top.dev,
                top.root,
                if top.read_only() { "ro" } else { "rw" }
            );
            if top.root != "/" {
                evidence.push(format!(
                    "a part of a sysfs ({}) is mounted over /sys",
                    top.root
                ));
            }
            for m in mounts.iter().filter(|m| {
                m.fs_type == "sysfs"
                    && m.mount_point.starts_with("/sys/")
                    && m.dev != top.dev
                    && !is_counters_mount(m)
            }) {
                evidence.push(format!(
                    "another namespace's sysfs ({} {}) is mounted at {}",
                    m.dev, m.root, m.mount_point
                ));
            }
        }
    }

    let at = sysfs.root().display();
    if evidence.is_empty() {
        let names: Vec<&str> = here.iter().map(|h| h.name.as_str()).collect();
        let mut found = format!(
            "sysfs at {at} shows this network namespace ({} netdev(s): {})",
            names.len(),
            some(&names)
        );
        if !mount_note.is_empty() {
            found = format!("{found}; {mount_note}");
        }
        return Check::pass(CheckId::HostSysfs, None, found);
    }
    let mut found = format!(
        "sysfs at {at} belongs to another network namespace (the host's /sys mounted into the \
         pod?): {}",
        evidence.join("; ")
    );
    if !mount_note.is_empty() {
        found = format!("{found}; {mount_note}");
    }
    Check::fail(CheckId::HostSysfs, None, found, SYSFS_FIX.into()).field(1)
}
