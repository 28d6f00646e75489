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
use rtnetlink::packet_core::{
    NLM_F_DUMP, NLM_F_REQUEST, NetlinkBuffer, NetlinkMessage, NetlinkPayload,
};
use rtnetlink::packet_route::RouteNetlinkMessage;
use rtnetlink::packet_route::link::{LinkAttribute, LinkFlags, LinkMessage, State};
use rtnetlink::sys::{
    AsyncSocket, AsyncSocketExt, SocketAddr, TokioSocket,
    protocols::{NETLINK_KOBJECT_UEVENT, NETLINK_ROUTE},
};
use std::collections::HashSet;
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
    /// A netdev's live link state; `None` when it left our namespace.
    Link { name: String, up: Option<bool> },
    /// rtnetlink's first dump has been reported in full (or refused).
    LinksDumped,
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

/// rtnetlink's multicast group of link changes.
const RTMGRP_LINK: u32 = 1;

/// Live link state of the netdevs in our network namespace.
///
/// One rtnetlink socket of our own, read a datagram at a time: each message is reduced to an
/// event before the next datagram is read, so thousands of netdevs cost no more memory than one.
/// (rtnetlink's connection parses a whole dump into an unbounded queue before anyone reads it:
/// 13.6 MB of `LinkMessage`s for 1,024 links.) Events the kernel dropped (`ENOBUFS`) mean a new
/// dump, and a link the new dump lacks is gone. False when there is no rtnetlink to watch.
pub fn links(tx: Sender<Event>) -> bool {
    let open = || -> std::io::Result<TokioSocket> {
        let mut socket = TokioSocket::new(NETLINK_ROUTE)?;
        socket.socket_mut().bind(&SocketAddr::new(0, RTMGRP_LINK))?;
        Ok(socket)
    };
    match open() {
        Ok(socket) => {
            tokio::spawn(LinkWatch::default().run(socket, tx));
            true
        }
        Err(e) => {
            warn!("rtnetlink unavailable ({e}); link state comes from sysfs only");
            false
        }
    }
}

/// The link watcher's own state: which dump is running, and the netdevs it has reported (to
/// tell the manager which ones a dump after lost events no longer shows).
#[derive(Default)]
struct LinkWatch {
    seq: u32,
    /// Sequence number of the dump in progress.
    dump: Option<u32>,
    /// Events were lost during that dump: dump again when it ends.
    again: bool,
    /// Names reported up or down, and those the running dump has shown.
    known: HashSet<String>,
    seen: HashSet<String>,
    /// The first dump has ended.
    dumped: bool,
}

impl LinkWatch {
    async fn run(mut self, socket: TokioSocket, tx: Sender<Event>) {
        // Subscribed first, then dumped: no change can fall between the two.
        self.request_dump(&socket).await;
        loop {
            let datagram = match socket.recv_from_full().await {
                Ok((buf, _)) => buf,
                Err(e) if e.raw_os_error() == Some(libc::ENOBUFS) => {
                    warn!("link events lost (socket buffer full); reading every link again");
                    if self.dump.is_some() {
                        self.again = true;
                    } else {
                        self.request_dump(&socket).await;
                    }
                    continue;
                }
                Err(e) => {
                    warn!("rtnetlink read failed ({e}); link state comes from sysfs only");
                    return;
                }
            };
            for ev in self.take(&datagram) {
                if tx.send(ev).await.is_err() {
                    return;
                }
            }
            if self.dump.is_none() && std::mem::take(&mut self.again) {
                self.request_dump(&socket).await;
            }
        }
    }

    async fn request_dump(&mut self, socket: &TokioSocket) {
        self.seq = self.seq.wrapping_add(1).max(1);
        let mut req = NetlinkMessage::from(RouteNetlinkMessage::GetLink(LinkMessage::default()));
        req.header.flags = NLM_F_REQUEST | NLM_F_DUMP;
        req.header.sequence_number = self.seq;
        req.finalize();
        let mut buf = vec![0; req.buffer_len()];
        req.serialize(&mut buf);
        match socket.send_to(&buf, &SocketAddr::new(0, 0)).await {
            Ok(_) => {
                self.dump = Some(self.seq);
                self.seen.clear();
            }
            Err(e) => warn!("cannot ask rtnetlink for the links ({e}); retried on lost events"),
        }
    }

    fn first_dump_ended(&mut self) -> Option<Event> {
        (!std::mem::replace(&mut self.dumped, true)).then_some(Event::LinksDumped)
    }

    /// The events in one datagram, in order; ends the running dump at its `NLMSG_DONE`.
    fn take(&mut self, datagram: &[u8]) -> Vec<Event> {
        let mut events = Vec::new();
        let mut rest = datagram;
        while let Ok(header) = NetlinkBuffer::new_checked(rest) {
            let len = header.length() as usize;
            let Ok(msg) = NetlinkMessage::<RouteNetlinkMessage>::deserialize(&rest[..len]) else {
                debug!("rtnetlink: undecodable message skipped");
                rest = &rest[len.next_multiple_of(4).min(rest.len())..];
                continue;
            };
            rest = &rest[len.next_multiple_of(4).min(rest.len())..];
            let ours = self.dump.is_some_and(|s| s == msg.header.sequence_number);
            let ev = match msg.payload {
                NetlinkPayload::InnerMessage(RouteNetlinkMessage::NewLink(m)) => {
                    link_event(&m, false)
                }
                NetlinkPayload::InnerMessage(RouteNetlinkMessage::DelLink(m)) => {
                    link_event(&m, true)
                }
                NetlinkPayload::Done(_) if ours => {
                    self.dump = None;
                    // What a complete dump no longer shows has left the namespace.
                    let seen = std::mem::take(&mut self.seen);
                    self.known.retain(|name| {
                        seen.contains(name) || {
                            events.push(Event::Link {
                                name: name.clone(),
                                up: None,
                            });
                            false
                        }
                    });
                    self.first_dump_ended()
                }
                NetlinkPayload::Error(e) if ours => {
                    // The dump did not run: the next lost event asks again.
                    warn!("rtnetlink refused the link dump: {e}");
                    self.dump = None;
                    self.seen = HashSet::new();
                    self.first_dump_ended()
                }
                _ => None,
            };
            let Some(ev) = ev else { continue };
            if let Event::Link { name, up } = &ev {
                if up.is_some() {
                    if ours {
                        self.seen.insert(name.clone());
                    }
                    if !self.known.contains(name) {
                        self.known.insert(name.clone());
                    }
                } else {
                    self.known.remove(name);
                }
            }
            events.push(ev);
        }
        events
    }
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

    /// One datagram of rtnetlink messages as the kernel sends them, answering sequence `seq`.
    fn datagram(seq: u32, links: &[(&str, bool)], done: bool) -> Vec<u8> {
        use rtnetlink::packet_core::DoneMessage;
        let mut out = Vec::new();
        let mut push = |mut msg: NetlinkMessage<RouteNetlinkMessage>| {
            msg.header.sequence_number = seq;
            msg.finalize();
            let start = out.len();
            out.resize(start + msg.buffer_len(), 0);
            msg.serialize(&mut out[start..]);
        };
        for (name, up) in links {
            let mut m = LinkMessage::default();
            if *up {
                m.header.flags = LinkFlags::Up | LinkFlags::LowerUp;
            }
            m.attributes.push(LinkAttribute::IfName(name.to_string()));
            push(NetlinkMessage::from(RouteNetlinkMessage::NewLink(m)));
        }
        if done {
            push(NetlinkMessage::new(
                Default::default(),
                NetlinkPayload::Done(DoneMessage::default()),
            ));
        }
        out
    }

    fn names(events: &[Event]) -> Vec<(String, Option<bool>)> {
        events
            .iter()
            .map(|e| match e {
                Event::Link { name, up } => (name.clone(), *up),
                other => panic!("not a link event: {other:?}"),
            })
            .collect()
    }

    #[test]
    fn a_dump_after_lost_events_reports_the_links_gone_meanwhile() {
        let mut w = LinkWatch {
            dump: Some(1),
            ..LinkWatch::default()
        };
        let first = w.take(&datagram(
            1,
            &[("ens1f0v0", true), ("ens1f0v1", false)],
            false,
        ));
        assert_eq!(
            names(&first),
            [
                ("ens1f0v0".into(), Some(true)),
                ("ens1f0v1".into(), Some(false))
            ]
        );
        let end = w.take(&datagram(1, &[], true));
        assert!(matches!(end[..], [Event::LinksDumped]), "{end:?}");
        assert_eq!(w.dump, None);
        // A multicast event (sequence 0) between dumps.
        let ev = w.take(&datagram(0, &[("ens1f0v2", true)], false));
        assert_eq!(names(&ev), [("ens1f0v2".into(), Some(true))]);

        // Events were lost; the new dump no longer shows ens1f0v1: it left the namespace.
        w.dump = Some(2);
        let mut again = w.take(&datagram(
            2,
            &[("ens1f0v0", false), ("ens1f0v2", true)],
            true,
        ));
        again.sort_by_key(|e| format!("{e:?}"));
        assert_eq!(
            names(&again),
            [
                ("ens1f0v0".into(), Some(false)),
                ("ens1f0v1".into(), None),
                ("ens1f0v2".into(), Some(true)),
            ]
        );
        assert_eq!(w.known.len(), 2);
        // A truncated datagram yields what it holds whole, and nothing else.
        let mut cut = datagram(0, &[("ens1f0v3", true), ("ens1f0v4", true)], false);
        cut.truncate(cut.len() - 3);
        assert_eq!(names(&w.take(&cut)), [("ens1f0v3".into(), Some(true))]);
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
