//! Device health: a pure function of the host snapshot, the live link states rtnetlink reports
//! and the pool's rule, giving a verdict and the reason for it. `serve` advertises it,
//! `discover` prints it, the metrics label it: one policy, one wording.
//!
//! What the kernel tells about a ConnectX function: a free VF's netdev stays administratively
//! down until a CNI brings it up inside the pod, and the RoCE port of a down netdev reads DOWN,
//! so a VF's own link says nothing about whether it can be used. What it can carry follows its
//! PF's physical link (carrier of the uplink netdev, `phys_state` of the PF's port) and its
//! administrative state on the PF (`ip link set <pf> vf N state auto|enable|disable`).
//!
//! The default rule ([`HealthRule::Uplink`]), first failing check wins:
//! 1. no driver bound: unhealthy (the function left its driver);
//! 2. a VF set `disable` on its PF: unhealthy; set `enable` (link forced up, VF-to-VF traffic
//!    through the embedded switch works): healthy whatever the uplink;
//! 3. the uplink is down: unhealthy. The uplink is the VF's PF, an SF's parent PF, or a PF
//!    (or any function without SR-IOV parent) itself. Live rtnetlink state of the uplink netdev
//!    wins; without it, the snapshot's `carrier`/`operstate` and its RDMA ports' `phys_state`;
//!    nothing known: no opinion;
//! 4. otherwise healthy, saying so when the device's own link is down (ignored).
//!
//! [`HealthRule::Strict`] adds the device's own netdev (live, else `operstate`) and RDMA ports
//! (`ACTIVE`) as step 4. A RoCE port follows its netdev: when rtnetlink knows the netdev, its
//! live state stands for the port, whose snapshot may be older.

use crate::config::HealthRule;
use crate::host::{Device, Host, NetDev, PciFunction, RdmaPort};
use serde::{Serialize, Serializer};
use std::collections::{BTreeMap, HashMap};
use std::fmt;

/// A VF's link state as its PF sets it (`IFLA_VF_LINK_STATE`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VfLinkState {
    /// Follows the PF's physical link (the default).
    Auto,
    /// Forced up.
    Enable,
    /// Forced down: the VF carries nothing.
    Disable,
}

/// What rtnetlink says of one netdev in the daemon's network namespace.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LiveLink {
    /// `IFF_UP`.
    pub admin_up: bool,
    /// `IFLA_CARRIER`, and an operstate that is not down.
    pub carrier: bool,
    /// The PF's VF list (`IFLA_VFINFO_LIST`), VF index -> state; `None` when the message had
    /// none (link events never carry it; a dump or get with `RTEXT_FILTER_VF` does).
    pub vfs: Option<BTreeMap<u32, VfLinkState>>,
}

impl LiveLink {
    fn usable(&self) -> bool {
        self.admin_up && self.carrier
    }
}

/// Live link state of the netdevs in the daemon's namespace, by name.
pub type LinkStates = HashMap<String, LiveLink>;

/// Take one rtnetlink report into `links` (`None`: the netdev left the namespace); true when
/// something changed. A report without a VF list keeps the one known: events never carry it.
pub fn update_link(links: &mut LinkStates, name: String, live: Option<LiveLink>) -> bool {
    match live {
        None => links.remove(&name).is_some(),
        Some(mut live) => {
            if live.vfs.is_none() {
                live.vfs = links.get(&name).and_then(|old| old.vfs.clone());
            }
            links.insert(name, live.clone()) != Some(live)
        }
    }
}

/// Why a device is (un)healthy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reason {
    Ok,
    /// Healthy although the device's own netdev or RDMA port is down (the uplink rule).
    OwnLinkIgnored,
    /// Healthy whatever the uplink: the PF forces the VF's link up.
    VfForcedUp {
        pf: String,
        vf: u32,
    },
    /// No driver bound to the function.
    NoDriver,
    /// The device is no longer on the host.
    Gone,
    /// The PF sets the VF's link state to `disable`.
    VfDisabled {
        pf: String,
        vf: u32,
    },
    /// The uplink netdev is administratively down.
    PfAdminDown {
        pf: String,
    },
    /// The uplink netdev has no carrier.
    PfNoCarrier {
        pf: String,
    },
    /// The uplink's RDMA port is not physically up (`phys_state` other than `LinkUp`).
    PfPortDown {
        ibdev: String,
        port: u32,
        phys_state: String,
    },
    /// Strict rule: the device's own netdev is down.
    OwnLinkDown {
        netdev: String,
    },
    /// Strict rule: the device's own RDMA port is not `ACTIVE`.
    OwnPortDown {
        ibdev: String,
        port: u32,
        state: String,
    },
    /// Kubelet still holds the device under another resource (a reload moved it).
    HeldElsewhere {
        resource: String,
    },
    /// Kubelet still holds the device under this resource, but it left the pool (gone from
    /// the host, or moved by a reload): listed until released.
    LeftPool,
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Reason::Ok => write!(f, "ok"),
            Reason::OwnLinkIgnored => write!(f, "own link down: ignored"),
            Reason::VfForcedUp { pf, vf } => write!(f, "VF {vf} link forced up on PF {pf}"),
            Reason::NoDriver => write!(f, "no driver bound"),
            Reason::Gone => write!(f, "gone from the host"),
            Reason::VfDisabled { pf, vf } => write!(f, "VF {vf} disabled on PF {pf}"),
            Reason::PfAdminDown { pf } => write!(f, "PF {pf} administratively down"),
            Reason::PfNoCarrier { pf } => write!(f, "PF {pf} no carrier"),
            Reason::PfPortDown {
                ibdev,
                port,
                phys_state,
            } => write!(f, "PF port {ibdev}/{port} {phys_state}"),
            Reason::OwnLinkDown { netdev } => write!(f, "own netdev {netdev} down"),
            Reason::OwnPortDown { ibdev, port, state } => {
                write!(f, "own RDMA port {ibdev}/{port} {state}")
            }
            Reason::HeldElsewhere { resource } => {
                write!(f, "held under {resource} until kubelet releases it")
            }
            Reason::LeftPool => write!(f, "left the pool; listed until kubelet releases it"),
        }
    }
}

/// A device's health and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    pub healthy: bool,
    pub reason: Reason,
}

impl Verdict {
    fn good(reason: Reason) -> Self {
        Verdict {
            healthy: true,
            reason,
        }
    }

    fn bad(reason: Reason) -> Self {
        Verdict {
            healthy: false,
            reason,
        }
    }
}

/// `healthy`, `healthy (own link down: ignored)`, `unhealthy: PF ens1f0 no carrier`.
impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.healthy, &self.reason) {
            (true, Reason::Ok) => write!(f, "healthy"),
            (true, r) => write!(f, "healthy ({r})"),
            (false, r) => write!(f, "unhealthy: {r}"),
        }
    }
}

/// `{"healthy": bool, "reason": "..."}` in `discover --output json`.
impl Serialize for Verdict {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct;
        let mut st = s.serialize_struct("Verdict", 2)?;
        st.serialize_field("healthy", &self.healthy)?;
        st.serialize_field("reason", &self.reason.to_string())?;
        st.end()
    }
}

/// `operstate` values that mean the link cannot carry traffic.
fn operstate_down(state: &str) -> bool {
    matches!(state, "down" | "lowerlayerdown" | "notpresent")
}

/// The verdict on one device of `host` under `rule`.
pub fn verdict(d: Device<'_>, host: &Host, links: &LinkStates, rule: HealthRule) -> Verdict {
    if d.driver().is_none() {
        return Verdict::bad(Reason::NoDriver);
    }
    // The function whose physical port carries this device's traffic, and the VF index on it.
    let (uplink, vf_index) = match d {
        Device::Pci(f) => match &f.physfn {
            Some(p) => (host.function(&p.address), Some(p.vf_index)),
            None => (Some(f), None),
        },
        Device::Aux(a) => (host.function(&a.parent), None),
    };

    let mut forced_up = None;
    if let (Some(pf), Some(vf)) = (uplink, vf_index)
        && let Some(pf_netdev) = pf.netdevs.first()
        && let Some(state) = links
            .get(&pf_netdev.name)
            .and_then(|l| l.vfs.as_ref()?.get(&vf))
    {
        let pf = pf_netdev.name.clone();
        match state {
            VfLinkState::Disable => return Verdict::bad(Reason::VfDisabled { pf, vf }),
            VfLinkState::Enable => forced_up = Some(Reason::VfForcedUp { pf, vf }),
            VfLinkState::Auto => {}
        }
    }
    if forced_up.is_none()
        && let Some(why) = uplink.and_then(|pf| uplink_down(pf, links))
    {
        return Verdict::bad(why);
    }

    match (own_link_down(d, links), rule) {
        (Some(why), HealthRule::Strict) => Verdict::bad(why),
        (Some(_), HealthRule::Uplink) if forced_up.is_none() => {
            Verdict::good(Reason::OwnLinkIgnored)
        }
        _ => Verdict::good(forced_up.unwrap_or(Reason::Ok)),
    }
}

/// Why the uplink function `pf` carries no traffic; `None` when it does or nothing is known.
fn uplink_down(pf: &PciFunction, links: &LinkStates) -> Option<Reason> {
    if let Some(n) = pf.netdevs.first() {
        let name = || n.name.clone();
        // rtnetlink is current; the snapshot's files (port state included) may be older.
        if let Some(live) = links.get(&n.name) {
            return match (live.admin_up, live.carrier) {
                (false, _) => Some(Reason::PfAdminDown { pf: name() }),
                (true, false) => Some(Reason::PfNoCarrier { pf: name() }),
                (true, true) => None,
            };
        }
        match (n.carrier, operstate_down(&n.operstate)) {
            (Some(false), _) => return Some(Reason::PfNoCarrier { pf: name() }),
            // The kernel refuses to read `carrier` only while the link is administratively down.
            (None, true) => return Some(Reason::PfAdminDown { pf: name() }),
            _ => {}
        }
    }
    let rdma = pf.rdma.as_ref()?;
    rdma.ports.iter().find_map(|p| match &p.phys_state {
        Some(s) if s != "LinkUp" => Some(Reason::PfPortDown {
            ibdev: rdma.ibdev.clone().unwrap_or_else(|| pf.address.clone()),
            port: p.number,
            phys_state: s.clone(),
        }),
        _ => None,
    })
}

/// The device's own netdev or RDMA port that is down, if any.
fn own_link_down(d: Device<'_>, links: &LinkStates) -> Option<Reason> {
    let netdev_down = |n: &NetDev| match links.get(&n.name) {
        Some(live) => !live.usable(),
        // A netdev that moved into a pod's namespace is simply absent: no opinion.
        None => operstate_down(&n.operstate),
    };
    if let Some(n) = d.netdevs().iter().find(|n| netdev_down(n)) {
        return Some(Reason::OwnLinkDown {
            netdev: n.name.clone(),
        });
    }
    let rdma = d.rdma()?;
    let live_netdev = d.netdevs().iter().any(|n| links.contains_key(&n.name));
    let port_down =
        |p: &&RdmaPort| p.state != "ACTIVE" && !(live_netdev && p.link_layer == "Ethernet");
    rdma.ports
        .iter()
        .find(port_down)
        .map(|p| Reason::OwnPortDown {
            ibdev: rdma.ibdev.clone().unwrap_or_else(|| d.id().to_string()),
            port: p.number,
            state: p.state.clone(),
        })
}
