//! Device health: a function (or SF) is healthy when its netdev is not down and every RDMA port is
//! ACTIVE. Live link state from rtnetlink wins over the sysfs snapshot when the daemon's network
//! namespace holds the netdev.

use crate::host::Device;
use std::collections::HashMap;

/// Link state of the netdevs rtnetlink reports in our namespace: name -> up.
pub type LinkStates = HashMap<String, bool>;

/// `operstate` values that mean the link cannot carry traffic.
fn operstate_down(state: &str) -> bool {
    matches!(state, "down" | "lowerlayerdown" | "notpresent")
}

pub fn healthy(d: Device<'_>, links: &LinkStates) -> bool {
    // A netdev that moved into a pod's namespace is simply absent: no opinion, not unhealthy.
    let links_up = d.netdevs().iter().all(|n| match links.get(&n.name) {
        Some(&up) => up,
        None => !operstate_down(&n.operstate),
    });
    let ports_active = d
        .rdma()
        .is_none_or(|r| r.ports.iter().all(|p| p.state == "ACTIVE"));
    links_up && ports_active
}
