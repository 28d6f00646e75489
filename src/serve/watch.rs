//! Event sources feeding the daemon: thin edges that only say "something changed".
//!
//! - kernel uevents (netlink): functions added/removed, drivers bound/unbound, VFs created;
//! - inotify on `bus/pci/devices` and `bus/pci/drivers/*`: the same changes on a fixture tree
//!   (real sysfs sends no inotify events; there the uevents do the work);
//! - rtnetlink: netdev link up/down, live;
//! - inotify on the kubelet device-plugins directory: kubelet restarts delete our sockets;
//! - inotify on the config file's directory: ConfigMap updates swap a symlink there;
//! - a periodic tick, as a safety net only.

use crate::host::{Scope, is_bdf};
use futures::StreamExt;
use inotify::{Inotify, WatchMask};
use rtnetlink::packet_core::NetlinkPayload;
use rtnetlink::packet_route::RouteNetlinkMessage;
use rtnetlink::packet_route::link::{LinkAttribute, LinkFlags, LinkMessage, State};
use rtnetlink::sys::{
    AsyncSocket, AsyncSocketExt, SocketAddr, TokioSocket, protocols::NETLINK_KOBJECT_UEVENT,
};
use std::path::{Path, PathBuf};
use std::time::Duration;
use tokio::sync::mpsc::Sender;
use tracing::{debug, warn};

#[derive(Debug)]
pub enum Event {
    /// Re-read sysfs, or the part of it named.
    Rescan { why: &'static str, scope: Scope },
    /// A file appeared in (`created`) or left the device-plugins directory.
    PluginDir { name: String, created: bool },
    /// Something changed in the config file's directory.
    ConfigTouched,
    /// A nicplug CDI spec was changed, replaced or removed (perhaps by us).
    CdiTouched,
    /// A netdev's live link state; `None` when it left our namespace.
    Link { name: String, up: Option<bool> },
}

/// Watch a set of directories with inotify, mapping each event through `f`.
fn spawn_inotify<F>(
    dirs: Vec<PathBuf>,
    mask: WatchMask,
    tx: Sender<Event>,
    what: &'static str,
    f: F,
) where
    F: Fn(&inotify::Event<std::ffi::OsString>) -> Option<Event> + Send + 'static,
{
    let inotify = match Inotify::init() {
        Ok(i) => i,
        Err(e) => {
            warn!("{what}: inotify unavailable ({e}); relying on the periodic rescan");
            return;
        }
    };
    for dir in &dirs {
        if let Err(e) = inotify.watches().add(dir, mask) {
            debug!(dir = %dir.display(), "{what}: cannot watch: {e}");
        }
    }
    let mut stream = match inotify.into_event_stream([0u8; 4096]) {
        Ok(s) => s,
        Err(e) => {
            warn!("{what}: inotify stream failed: {e}");
            return;
        }
    };
    tokio::spawn(async move {
        while let Some(Ok(ev)) = stream.next().await {
            if let Some(event) = f(&ev)
                && tx.send(event).await.is_err()
            {
                return;
            }
        }
    });
}

pub fn plugin_dir(dir: &Path, tx: Sender<Event>) {
    spawn_inotify(
        vec![dir.to_path_buf()],
        WatchMask::CREATE | WatchMask::DELETE | WatchMask::MOVED_FROM | WatchMask::MOVED_TO,
        tx,
        "device-plugins dir",
        |ev| {
            let name = ev.name.as_ref()?.to_str()?.to_string();
            let created = ev
                .mask
                .intersects(inotify::EventMask::CREATE | inotify::EventMask::MOVED_TO);
            Some(Event::PluginDir { name, created })
        },
    );
}

pub fn config_dir(config: &Path, tx: Sender<Event>) {
    let dir = config
        .parent()
        .map_or_else(|| PathBuf::from("."), Path::to_path_buf);
    spawn_inotify(
        vec![dir],
        WatchMask::CREATE
            | WatchMask::DELETE
            | WatchMask::MOVED_TO
            | WatchMask::MOVED_FROM
            | WatchMask::CLOSE_WRITE
            | WatchMask::MODIFY,
        tx,
        "config dir",
        |_| Some(Event::ConfigTouched),
    );
}

/// The CDI spec directory: someone else deleting or editing a spec we wrote. Our own writes
/// show up too; checking them costs a `stat` each.
pub fn cdi_dir(dir: &Path, tx: Sender<Event>) {
    // The directory exists before it is watched (the specs are written into it soon anyway).
    let _ = std::fs::create_dir_all(dir);
    spawn_inotify(
        vec![dir.to_path_buf()],
        WatchMask::DELETE
            | WatchMask::MOVED_FROM
            | WatchMask::MOVED_TO
            | WatchMask::CLOSE_WRITE
            | WatchMask::CREATE
            | WatchMask::ATTRIB,
        tx,
        "CDI spec directory",
        |ev| {
            let name = ev.name.as_ref()?.to_str()?;
            (name.starts_with("nicplug-") && name.ends_with(".json")).then_some(Event::CdiTouched)
        },
    );
}

pub fn sysfs_tree(sysfs_root: &Path, tx: Sender<Event>) {
    let mut dirs = vec![sysfs_root.join("bus/pci/devices")];
    if let Ok(entries) = std::fs::read_dir(sysfs_root.join("bus/pci/drivers")) {
        dirs.extend(entries.flatten().map(|e| e.path()));
    }
    spawn_inotify(
        dirs,
        WatchMask::CREATE | WatchMask::DELETE | WatchMask::MOVED_TO | WatchMask::MOVED_FROM,
        tx,
        "sysfs tree",
        |ev| {
            // Entries in these directories are named by PCI address; anything else (a queue
            // overflow, the directory itself going) could hide any change.
            let scope = match ev.name.as_ref().and_then(|n| n.to_str()) {
                Some(name) if is_bdf(name) => Scope::function(name),
                _ => Scope::All,
            };
            Some(Event::Rescan {
                why: "sysfs tree changed",
                scope,
            })
        },
    );
}

pub fn periodic(every: Duration, tx: Sender<Event>) {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(every);
        tick.tick().await;
        loop {
            tick.tick().await;
            let ev = Event::Rescan {
                why: "periodic",
                scope: Scope::All,
            };
            if tx.send(ev).await.is_err() {
                return;
            }
        }
    });
}

/// Subsystems whose uevents can change what we offer.
const UEVENT_SUBSYSTEMS: [&str; 5] = ["pci", "net", "infiniband", "infiniband_verbs", "auxiliary"];

pub fn uevents(tx: Sender<Event>) {
    let mut socket = match TokioSocket::new(NETLINK_KOBJECT_UEVENT) {
        Ok(s) => s,
        Err(e) => {
            warn!("kernel uevents unavailable ({e}); relying on the periodic rescan");
            return;
        }
    };
    // Group 1: the kernel's own uevents (not udev's re-broadcast).
    if let Err(e) = socket.socket_mut().bind(&SocketAddr::new(0, 1)) {
        warn!("cannot subscribe to kernel uevents ({e}); relying on the periodic rescan");
        return;
    }
    tokio::spawn(async move {
        loop {
            let Ok((buf, _)) = socket.recv_from_full().await else {
                continue;
            };
            let Some(scope) = uevent_scope(&buf) else {
                continue;
            };
            if tx
                .send(Event::Rescan {
                    why: "uevent",
                    scope,
                })
                .await
                .is_err()
            {
                return;
            }
        }
    });
}

/// What a kernel uevent (`KEY=value` strings, NUL-separated) says may have changed; `None`
/// when nothing we serve: another subsystem, or a virtual device (a pod's veth, a bridge).
fn uevent_scope(buf: &[u8]) -> Option<Scope> {
    let field = |key: &[u8]| {
        buf.split(|b| *b == 0)
            .find_map(|kv| kv.strip_prefix(key))
            .and_then(|v| std::str::from_utf8(v).ok())
    };
    let subsystem = field(b"SUBSYSTEM=")?;
    if !UEVENT_SUBSYSTEMS.contains(&subsystem) {
        return None;
    }
    let Some(devpath) = field(b"DEVPATH=") else {
        return Some(Scope::All);
    };
    // A function's own entries (its netdev, ibdev, SFs) sit below its directory: the deepest
    // PCI address on the path is the function that changed.
    match devpath.split('/').rev().find(|c| is_bdf(c)) {
        Some(address) => Some(Scope::function(address)),
        None if devpath.starts_with("/devices/virtual/") => None,
        None => Some(Scope::All),
    }
}

/// Live link state of the netdevs in our network namespace.
pub fn links(tx: Sender<Event>) {
    let (mut conn, handle, mut messages) = match rtnetlink::new_connection() {
        Ok(c) => c,
        Err(e) => {
            warn!("rtnetlink unavailable ({e}); link state comes from sysfs only");
            return;
        }
    };
    const RTMGRP_LINK: u32 = 1;
    if let Err(e) = conn
        .socket_mut()
        .socket_mut()
        .bind(&SocketAddr::new(0, RTMGRP_LINK))
    {
        warn!("cannot subscribe to link events ({e}); link state comes from sysfs only");
        return;
    }
    tokio::spawn(conn);
    tokio::spawn(async move {
        // Subscribe first, then dump: no change can fall between the two.
        let mut dump = handle.link().get().execute();
        while let Some(Ok(msg)) = dump.next().await {
            if let Some(ev) = link_event(&msg, false)
                && tx.send(ev).await.is_err()
            {
                return;
            }
        }
        while let Some((msg, _)) = messages.next().await {
            let ev = match msg.payload {
                NetlinkPayload::InnerMessage(RouteNetlinkMessage::NewLink(m)) => {
                    link_event(&m, false)
                }
                NetlinkPayload::InnerMessage(RouteNetlinkMessage::DelLink(m)) => {
                    link_event(&m, true)
                }
                _ => None,
            };
            if let Some(ev) = ev
                && tx.send(ev).await.is_err()
            {
                return;
            }
        }
    });
}

fn link_event(msg: &LinkMessage, deleted: bool) -> Option<Event> {
    let name = msg.attributes.iter().find_map(|a| match a {
        LinkAttribute::IfName(n) => Some(n.clone()),
        _ => None,
    })?;
    if deleted {
        return Some(Event::Link { name, up: None });
    }
    let oper_down = msg.attributes.iter().any(|a| {
        matches!(
            a,
            LinkAttribute::OperState(State::Down | State::LowerLayerDown | State::NotPresent)
        )
    });
    let up = msg.header.flags.contains(LinkFlags::Up) && !oper_down;
    Some(Event::Link { name, up: Some(up) })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn uevent(fields: &[&str]) -> Vec<u8> {
        let mut buf = b"remove@/devices/x".to_vec();
        for f in fields {
            buf.push(0);
            buf.extend_from_slice(f.as_bytes());
        }
        buf
    }

    #[test]
    fn uevents_name_the_function_they_touch() {
        let vf = "/devices/pci0000:3a/0000:3a:00.0/0000:3b:01.1";
        for (fields, want) in [
            (
                vec!["ACTION=remove", &format!("DEVPATH={vf}"), "SUBSYSTEM=pci"],
                Some(Scope::function("0000:3b:01.1")),
            ),
            (
                vec![&format!("DEVPATH={vf}/net/ens1f0v1"), "SUBSYSTEM=net"],
                Some(Scope::function("0000:3b:01.1")),
            ),
            (
                vec![
                    "DEVPATH=/devices/pci0000:3a/0000:3a:00.0/0000:3b:00.0/mlx5_core.sf.2",
                    "SUBSYSTEM=auxiliary",
                ],
                Some(Scope::function("0000:3b:00.0")),
            ),
            (
                vec!["DEVPATH=/devices/virtual/net/veth1a2b", "SUBSYSTEM=net"],
                None,
            ),
            (vec![&format!("DEVPATH={vf}"), "SUBSYSTEM=block"], None),
            (
                vec!["DEVPATH=/devices/platform/foo/net/eth9", "SUBSYSTEM=net"],
                Some(Scope::All),
            ),
            (vec!["SUBSYSTEM=pci"], Some(Scope::All)),
        ] {
            assert_eq!(uevent_scope(&uevent(&fields)), want, "{fields:?}");
        }
    }
}
