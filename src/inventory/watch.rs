//! Event sources feeding the inventory: thin edges that only say "something changed".
//!
//! - kernel uevents (netlink): functions added/removed, drivers bound/unbound, VFs created;
//! - inotify on `bus/pci/devices` and `bus/pci/drivers/*`: the same changes on a fixture tree
//!   (real sysfs sends no inotify events; there the uevents do the work);
//! - rtnetlink: netdev link up/down and carrier, live; a PF's VF states on each of its events;
//! - inotify on the config file's directory: ConfigMap updates swap a symlink there;
//! - a periodic tick, as a safety net only;
//! - [`file_versions`]: another front end's record of what it holds, polled (a `stat` a
//!   second), since it may live on a filesystem inotify cannot see into.
//!
//! [`spawn_inotify`] is shared with the front ends' own watches (the device plugin's kubelet
//! directory and CDI specs).

use crate::health::{LiveLink, VfLinkState};
use crate::host::{Scope, is_bdf};
use futures::StreamExt;
use inotify::{Inotify, WatchMask};
use rtnetlink::packet_core::{
    NLM_F_DUMP, NLM_F_REQUEST, NetlinkBuffer, NetlinkMessage, NetlinkPayload,
};
use rtnetlink::packet_route::RouteNetlinkMessage;
use rtnetlink::packet_route::link::{
    LinkAttribute, LinkExtentMask, LinkFlags, LinkMessage, State, VfInfo,
    VfLinkState as NlVfLinkState,
};
use rtnetlink::sys::{
    AsyncSocket, AsyncSocketExt, SocketAddr, TokioSocket,
    protocols::{NETLINK_KOBJECT_UEVENT, NETLINK_ROUTE},
};
use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::time::Duration;
use tokio::sync::mpsc::Sender;
use tracing::{debug, warn};

/// What changes the inventory. Watchers send these; tests inject them into a
/// [`super::Reconciler`].
#[derive(Debug)]
pub enum Event {
    /// Re-read sysfs, or the part of it named. A watcher that lost events sends
    /// [`Scope::All`].
    Rescan { why: &'static str, scope: Scope },
    /// Something changed in the config file's directory.
    ConfigTouched,
    /// A netdev's live link state; `None` when it left our namespace.
    Link {
        name: String,
        live: Option<LiveLink>,
    },
    /// rtnetlink's first dump has been reported in full (or refused).
    LinksDumped,
    /// Who holds which device now (from the front end that hands them out).
    Claims(super::Claims),
}

/// The first wait before restarting a failed event source, doubled up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_millis(50);
const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// Watch a set of directories with inotify, mapping each event through `f`. Whatever makes
/// events go missing (queue overflow, a watched directory removed, a read error, a directory
/// not there yet) sends `lost()` (the caller's full rescan) and opens the watch again, with
/// capped backoff: the watcher never stops, and an error never spins.
pub fn spawn_inotify<T, F>(
    dirs: Vec<PathBuf>,
    mask: WatchMask,
    tx: Sender<T>,
    what: &'static str,
    lost: fn() -> T,
    f: F,
) where
    T: Send + 'static,
    F: Fn(&inotify::Event<std::ffi::OsString>) -> Option<T> + Send + 'static,
{
    tokio::spawn(async move {
        let mut backoff = FIRST_BACKOFF;
        let mut opened_before = false;
        loop {
            let (stream, missing) = match open_inotify(&dirs, mask) {
                Ok(opened) => opened,
                Err(e) => {
                    warn!(
                        "{what}: inotify unavailable ({e}); retrying in {backoff:?}, the periodic rescan covers meanwhile"
                    );
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                    continue;
                }
            };
            if opened_before {
                // Changes between the failure and now were not seen.
                if tx.send(lost()).await.is_err() {
                    return;
                }
            }
            opened_before = true;
            let Some(mut stream) = stream else {
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(MAX_BACKOFF);
                continue;
            };
            // A directory that could not be watched is tried again after the backoff.
            let (wait, all_watched) = (backoff, missing.is_empty());
            let retry = async move {
                if all_watched {
                    std::future::pending::<()>().await;
                }
                tokio::time::sleep(wait).await;
            };
            tokio::pin!(retry);
            let why = loop {
                let ev = tokio::select! {
                    ev = stream.next() => ev,
                    _ = &mut retry => break format!("not watched yet: {}", show(&missing)),
                };
                match ev {
                    Some(Ok(ev)) => {
                        if ev.mask.intersects(inotify::EventMask::Q_OVERFLOW) {
                            break "event queue overflowed".to_string();
                        }
                        if ev.mask.intersects(inotify::EventMask::IGNORED) {
                            break "a watched directory went away".to_string();
                        }
                        backoff = FIRST_BACKOFF;
                        if let Some(event) = f(&ev)
                            && tx.send(event).await.is_err()
                        {
                            return;
                        }
                    }
                    Some(Err(e)) => break format!("read failed: {e}"),
                    None => break "stream ended".to_string(),
                }
            };
            if missing.is_empty() {
                warn!("{what}: {why}; full rescan, watching again in {backoff:?}");
            } else {
                debug!("{what}: {why}; retrying in {backoff:?}");
            }
            if tx.send(lost()).await.is_err() {
                return;
            }
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(MAX_BACKOFF);
        }
    });
}

type InotifyStream = inotify::EventStream<[u8; 4096]>;

/// An inotify instance watching every directory of `dirs` that exists; the stream is `None`
/// when none does. Also returns the directories not watched.
fn open_inotify(
    dirs: &[PathBuf],
    mask: WatchMask,
) -> std::io::Result<(Option<InotifyStream>, Vec<PathBuf>)> {
    let inotify = Inotify::init()?;
    let mut missing = Vec::new();
    for dir in dirs {
        if let Err(e) = inotify.watches().add(dir, mask) {
            debug!(dir = %dir.display(), "cannot watch: {e}");
            missing.push(dir.clone());
        }
    }
    if missing.len() == dirs.len() {
        return Ok((None, missing));
    }
    Ok((Some(inotify.into_event_stream([0u8; 4096])?), missing))
}

fn show(dirs: &[PathBuf]) -> String {
    dirs.iter()
        .map(|d| d.display().to_string())
        .collect::<Vec<_>>()
        .join(", ")
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
        || Event::ConfigTouched,
        |_| Some(Event::ConfigTouched),
    );
}

pub fn sysfs_tree(sysfs_root: &Path, tx: Sender<Event>) {
    let mut dirs = vec![sysfs_root.join(crate::host::layout::PCI_DEVICES)];
    if let Ok(entries) = std::fs::read_dir(sysfs_root.join("bus/pci/drivers")) {
        dirs.extend(entries.flatten().map(|e| e.path()));
    }
    spawn_inotify(
        dirs,
        WatchMask::CREATE | WatchMask::DELETE | WatchMask::MOVED_TO | WatchMask::MOVED_FROM,
        tx,
        "sysfs tree",
        || Event::Rescan {
            why: "sysfs watch restarted",
            scope: Scope::All,
        },
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

/// Look at `path` every `every` (one `stat` in the blocking pool) and send `read(path)`
/// whenever its inode, size or mtime changed, the first look included. Ends when the receiver
/// is dropped.
pub fn file_versions<T, F>(
    path: PathBuf,
    every: Duration,
    read: F,
) -> tokio::sync::mpsc::Receiver<T>
where
    T: Send + 'static,
    F: Fn(&Path) -> T + Send + Sync + 'static,
{
    let (tx, rx) = tokio::sync::mpsc::channel(1);
    let read = std::sync::Arc::new(read);
    tokio::spawn(async move {
        let mut seen = None;
        loop {
            let (p, prev, read) = (path.clone(), seen, read.clone());
            let Ok((now, got)) = tokio::task::spawn_blocking(move || {
                let now = crate::files::stamp(&p);
                (now, (now != prev).then(|| read(&p)))
            })
            .await
            else {
                return;
            };
            seen = now;
            if let Some(v) = got
                && tx.send(v).await.is_err()
            {
                return;
            }
            tokio::time::sleep(every).await;
        }
    });
    rx
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

/// Subsystems whose uevents can change what we offer (`vdpa`, `vhost-vdpa` and `uio`: the
/// device classes' nodes come and go below their function).
const UEVENT_SUBSYSTEMS: [&str; 8] = [
    "pci",
    "net",
    "infiniband",
    "infiniband_verbs",
    "auxiliary",
    "vdpa",
    "vhost-vdpa",
    "uio",
];

/// Where kernel uevents come from: the netlink socket, or a test's script. A seam for the
/// kernel's side only; what the daemon does with each outcome is [`pump_uevents`].
pub trait UeventSource: Send + 'static {
    /// The next uevent; `ENOBUFS` when the kernel dropped some (the socket stays usable).
    fn recv(&mut self) -> impl std::future::Future<Output = std::io::Result<Vec<u8>>> + Send;
}

/// The kernel's uevent socket.
struct NetlinkUevents(TokioSocket);

impl UeventSource for NetlinkUevents {
    async fn recv(&mut self) -> std::io::Result<Vec<u8>> {
        self.0.recv_from_full().await.map(|(buf, _)| buf)
    }
}

/// Receive buffer asked for: a 127-VF burst is hundreds of uevents at once. An overflow is
/// still possible (and then handled), just rarer.
const UEVENT_RCVBUF: usize = 4 << 20;

fn open_uevents() -> std::io::Result<NetlinkUevents> {
    let mut socket = TokioSocket::new(NETLINK_KOBJECT_UEVENT)?;
    // Group 1: the kernel's own uevents (not udev's re-broadcast).
    socket.socket_mut().bind(&SocketAddr::new(0, 1))?;
    if let Err(e) = socket.socket_mut().set_rx_buf_sz(UEVENT_RCVBUF) {
        debug!("uevent socket: cannot enlarge the receive buffer: {e}");
    }
    Ok(NetlinkUevents(socket))
}

pub fn uevents(tx: Sender<Event>) {
    tokio::spawn(pump_uevents(open_uevents, tx));
}

/// Turn uevents into rescans, for as long as anyone listens. A dropped batch (`ENOBUFS`) is a
/// full rescan; any other error is a full rescan and a fresh socket after a capped backoff.
pub async fn pump_uevents<S, O>(mut open: O, tx: Sender<Event>)
where
    S: UeventSource,
    O: FnMut() -> std::io::Result<S> + Send + 'static,
{
    let lost = || Event::Rescan {
        why: "uevents lost",
        scope: Scope::All,
    };
    let mut backoff = FIRST_BACKOFF;
    let mut overflows = 0u64;
    let mut opened_before = false;
    loop {
        let mut source = match open() {
            Ok(s) => s,
            Err(e) => {
                warn!(
                    "kernel uevents unavailable ({e}); retrying in {backoff:?}, the periodic rescan covers meanwhile"
                );
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(MAX_BACKOFF);
                continue;
            }
        };
        if opened_before && tx.send(lost()).await.is_err() {
            return;
        }
        opened_before = true;
        loop {
            match source.recv().await {
                Ok(buf) => {
                    backoff = FIRST_BACKOFF;
                    if let Some(scope) = uevent_scope(&buf)
                        && tx
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
                Err(e) if e.raw_os_error() == Some(libc::ENOBUFS) => {
                    overflows += 1;
                    if overflows == 1 || overflows.is_multiple_of(100) {
                        warn!(
                            overflows,
                            "uevent socket overflowed: events lost; full rescan"
                        );
                    }
                    if tx.send(lost()).await.is_err() {
                        return;
                    }
                }
                Err(e) => {
                    warn!("uevent socket failed ({e}); full rescan, reopening in {backoff:?}");
                    if tx.send(lost()).await.is_err() {
                        return;
                    }
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                    break;
                }
            }
        }
    }
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

/// Asking rtnetlink for the VF list (`RTEXT_FILTER_VF`), without the VFs' traffic counters.
fn vf_filter() -> Vec<LinkExtentMask> {
    vec![LinkExtentMask::Vf, LinkExtentMask::SkipStats]
}

/// rtnetlink's multicast group of link changes.
const RTMGRP_LINK: u32 = 1;

/// Live link state of the netdevs in our network namespace, with each PF's VF states.
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
    /// Names reported present, and those the running dump has shown.
    known: HashSet<String>,
    seen: HashSet<String>,
    /// The first dump has ended.
    dumped: bool,
    /// Interface indexes whose VF list to ask for.
    queries: Vec<u32>,
}

impl LinkWatch {
    async fn run(mut self, socket: TokioSocket, tx: Sender<Event>) {
        // Subscribed first, then dumped: no change can fall between the two.
        self.request(&socket, None).await;
        loop {
            let datagram = match socket.recv_from_full().await {
                Ok((buf, _)) => buf,
                Err(e) if e.raw_os_error() == Some(libc::ENOBUFS) => {
                    warn!("link events lost (socket buffer full); reading every link again");
                    if self.dump.is_some() {
                        self.again = true;
                    } else {
                        self.request(&socket, None).await;
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
                self.request(&socket, None).await;
            }
            // Link events never carry the VF list, and setting a VF's state through its PF
            // (`ip link set <pf> vf N state ...`) raises nothing but a plain event on the PF:
            // ask for the list now (the answer comes back on this socket).
            for index in std::mem::take(&mut self.queries) {
                self.request(&socket, Some(index)).await;
            }
        }
    }

    /// Ask for every link (`None`: a dump) or one, with the VF list.
    async fn request(&mut self, socket: &TokioSocket, index: Option<u32>) {
        self.seq = self.seq.wrapping_add(1).max(1);
        let mut msg = LinkMessage::default();
        msg.attributes.push(LinkAttribute::ExtMask(vf_filter()));
        msg.header.index = index.unwrap_or(0);
        let mut req = NetlinkMessage::from(RouteNetlinkMessage::GetLink(msg));
        req.header.flags = NLM_F_REQUEST | if index.is_none() { NLM_F_DUMP } else { 0 };
        req.header.sequence_number = self.seq;
        req.finalize();
        let mut buf = vec![0; req.buffer_len()];
        req.serialize(&mut buf);
        match socket.send_to(&buf, &SocketAddr::new(0, 0)).await {
            Ok(_) if index.is_none() => {
                self.dump = Some(self.seq);
                self.seen.clear();
            }
            Ok(_) => {}
            Err(e) => warn!("cannot ask rtnetlink for links ({e}); asked again on lost events"),
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
            let parsed = NetlinkMessage::<RouteNetlinkMessage>::deserialize(&rest[..len]);
            rest = &rest[len.next_multiple_of(4).min(rest.len())..];
            let Ok(msg) = parsed else {
                debug!("rtnetlink: undecodable message skipped");
                continue;
            };
            let seq = msg.header.sequence_number;
            let ours = self.dump.is_some_and(|s| s == seq);
            let ev = match msg.payload {
                NetlinkPayload::InnerMessage(RouteNetlinkMessage::NewLink(m)) => {
                    if seq == 0 {
                        // A change the kernel announced, not an answer.
                        if may_have_vfs(&m) && !self.queries.contains(&m.header.index) {
                            // One question per link however many events it raised: a
                            // burst of answers would overrun the socket.
                            self.queries.push(m.header.index);
                        }
                    } else if !ours
                        && !m
                            .attributes
                            .iter()
                            .any(|a| matches!(a, LinkAttribute::VfInfoList(_)))
                    {
                        // An answer for a VF list that has none says nothing new.
                        continue;
                    }
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
                                live: None,
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
            if let Event::Link { name, live } = &ev {
                if live.is_some() {
                    // Any sign of life while a dump runs counts, not only the dump's own
                    // answer: a link announced behind the dump's position is still there.
                    if self.dump.is_some() {
                        self.seen.insert(name.clone());
                    }
                    if !self.known.contains(name) {
                        self.known.insert(name.clone());
                    }
                } else {
                    self.seen.remove(name);
                    self.known.remove(name);
                }
            }
            events.push(ev);
        }
        events
    }
}

/// A netdev of a device (no `IFLA_LINKINFO` kind, unlike veth, bridge, vlan, ...): possibly a
/// PF with VFs.
fn may_have_vfs(msg: &LinkMessage) -> bool {
    !msg.attributes
        .iter()
        .any(|a| matches!(a, LinkAttribute::LinkInfo(_)))
}

fn link_event(msg: &LinkMessage, deleted: bool) -> Option<Event> {
    let name = msg.attributes.iter().find_map(|a| match a {
        LinkAttribute::IfName(n) => Some(n.clone()),
        _ => None,
    })?;
    if deleted {
        return Some(Event::Link { name, live: None });
    }
    Some(Event::Link {
        name,
        live: Some(live_link(msg)),
    })
}

/// What one `RTM_NEWLINK` says: admin state, carrier, and the VF list when it has one.
pub(crate) fn live_link(msg: &LinkMessage) -> LiveLink {
    let mut oper_down = false;
    let mut carrier = None;
    let mut vfs = None;
    for a in &msg.attributes {
        match a {
            LinkAttribute::OperState(State::Down | State::LowerLayerDown | State::NotPresent) => {
                oper_down = true
            }
            LinkAttribute::Carrier(c) => carrier = Some(*c != 0),
            LinkAttribute::VfInfoList(list) => {
                let mut states = std::collections::BTreeMap::new();
                for info in list {
                    for attr in &info.0 {
                        if let VfInfo::LinkState(s) = attr {
                            let state = match s.state {
                                NlVfLinkState::Enable => VfLinkState::Enable,
                                NlVfLinkState::Disable => VfLinkState::Disable,
                                // auto, and values newer than this build: follow the PF.
                                _ => VfLinkState::Auto,
                            };
                            states.insert(s.vf_id, state);
                        }
                    }
                }
                vfs = Some(states);
            }
            _ => {}
        }
    }
    // Old kernels send no IFLA_CARRIER; IFF_LOWER_UP says the same.
    let carrier = carrier.unwrap_or_else(|| msg.header.flags.contains(LinkFlags::LowerUp));
    LiveLink {
        admin_up: msg.header.flags.contains(LinkFlags::Up),
        carrier: carrier && !oper_down,
        vfs,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::VecDeque;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// The kernel's side, scripted: each outcome once, then silence.
    struct Script(VecDeque<std::io::Result<Vec<u8>>>);

    impl UeventSource for Script {
        async fn recv(&mut self) -> std::io::Result<Vec<u8>> {
            match self.0.pop_front() {
                Some(r) => r,
                None => std::future::pending().await,
            }
        }
    }

    fn scope_of(ev: Option<Event>) -> (&'static str, Scope) {
        match ev {
            Some(Event::Rescan { why, scope }) => (why, scope),
            other => panic!("expected a rescan, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn a_lost_or_failed_uevent_source_is_a_full_rescan_and_is_reopened() {
        let vf = "0000:3b:01.1";
        let add = move || {
            Ok(uevent(&[
                &format!("DEVPATH=/devices/pci0000:3a/{vf}"),
                "SUBSYSTEM=pci",
            ]))
        };
        let opened = Arc::new(AtomicUsize::new(0));
        let counter = opened.clone();
        let open = move || {
            let n = counter.fetch_add(1, Ordering::SeqCst);
            let script: Vec<std::io::Result<Vec<u8>>> = match n {
                0 => vec![
                    add(),
                    Err(std::io::Error::from_raw_os_error(libc::ENOBUFS)),
                    add(),
                    Err(std::io::Error::from_raw_os_error(libc::EIO)),
                ],
                1 => return Err(std::io::Error::from_raw_os_error(libc::EMFILE)),
                _ => vec![add()],
            };
            Ok(Script(script.into()))
        };
        let (tx, mut rx) = tokio::sync::mpsc::channel(16);
        let task = tokio::spawn(pump_uevents(open, tx));
        let all = ("uevents lost", Scope::All);
        let one = ("uevent", Scope::function(vf));
        assert_eq!(scope_of(rx.recv().await), one);
        assert_eq!(
            scope_of(rx.recv().await),
            all,
            "an overflow is a full rescan"
        );
        assert_eq!(scope_of(rx.recv().await), one, "and the socket goes on");
        assert_eq!(scope_of(rx.recv().await), all, "a failure is a full rescan");
        // Reopening failed once, then worked: what happened meanwhile is unknown.
        assert_eq!(scope_of(rx.recv().await), all);
        assert_eq!(scope_of(rx.recv().await), one);
        assert_eq!(opened.load(Ordering::SeqCst), 3);
        task.abort();
    }

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
                vec![
                    &format!("DEVPATH={vf}/vdpa0/vhost-vdpa-0"),
                    "SUBSYSTEM=vhost-vdpa",
                ],
                Some(Scope::function("0000:3b:01.1")),
            ),
            (
                vec![&format!("DEVPATH={vf}/uio/uio3"), "SUBSYSTEM=uio"],
                Some(Scope::function("0000:3b:01.1")),
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
                Event::Link { name, live } => (name.clone(), live.as_ref().map(|l| l.admin_up)),
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

    /// One netlink attribute as the kernel lays it out: length, type, payload, padding to 4.
    fn nla(kind: u16, payload: &[u8]) -> Vec<u8> {
        let mut out = ((4 + payload.len()) as u16).to_ne_bytes().to_vec();
        out.extend_from_slice(&kind.to_ne_bytes());
        out.extend_from_slice(payload);
        out.resize(out.len().div_ceil(4) * 4, 0);
        out
    }

    /// An `RTM_NEWLINK` body (`ifinfomsg` + attributes), as the kernel answers a get with
    /// `RTEXT_FILTER_VF`.
    fn newlink(flags: u32, attrs: &[Vec<u8>]) -> LinkMessage {
        use rtnetlink::packet_core::Parseable;
        use rtnetlink::packet_route::link::LinkMessageBuffer;
        // family, pad, type (ARPHRD_ETHER), index, flags, change
        let mut buf = vec![0u8, 0];
        buf.extend_from_slice(&1u16.to_ne_bytes());
        buf.extend_from_slice(&4i32.to_ne_bytes());
        buf.extend_from_slice(&flags.to_ne_bytes());
        buf.extend_from_slice(&0u32.to_ne_bytes());
        for a in attrs {
            buf.extend_from_slice(a);
        }
        LinkMessage::parse(&LinkMessageBuffer::new(&buf)).expect("a valid RTM_NEWLINK")
    }

    #[test]
    fn vf_states_are_read_from_the_vf_info_list() {
        const IFF_UP: u32 = 1;
        const IFF_LOWER_UP: u32 = 1 << 16;
        const IFLA_IFNAME: u16 = 3;
        const IFLA_OPERSTATE: u16 = 16;
        const IFLA_VFINFO_LIST: u16 = 22;
        const IFLA_CARRIER: u16 = 33;
        const NLA_F_NESTED: u16 = 1 << 15;
        const IFLA_VF_INFO: u16 = 1;
        const IFLA_VF_MAC: u16 = 1;
        const IFLA_VF_LINK_STATE: u16 = 5;
        // struct ifla_vf_mac { __u32 vf; __u8 mac[32]; }, struct ifla_vf_link_state { __u32 vf;
        // __u32 link_state; } with 0 auto, 1 enable, 2 disable.
        // The kernel nests with `nla_nest_start_noflag` (no NLA_F_NESTED); accept both.
        let vf = |index: u32, state: u32, nested: u16| {
            let mut mac = index.to_ne_bytes().to_vec();
            mac.extend_from_slice(&[0x0c, 0x42, 0xa1, 0x5e, 0x7a, index as u8]);
            mac.resize(4 + 32, 0);
            let mut link = index.to_ne_bytes().to_vec();
            link.extend_from_slice(&state.to_ne_bytes());
            let mut body = nla(IFLA_VF_MAC, &mac);
            body.extend(nla(IFLA_VF_LINK_STATE, &link));
            nla(IFLA_VF_INFO | nested, &body)
        };
        let pf = |nested: u16| {
            let list: Vec<u8> = [(0, 0), (3, 2), (5, 1), (6, 7)]
                .into_iter()
                .flat_map(|(i, state)| vf(i, state, nested))
                .collect();
            newlink(
                IFF_UP | IFF_LOWER_UP,
                &[
                    nla(IFLA_IFNAME, b"ens1f0\0"),
                    nla(IFLA_OPERSTATE, &[6]), // IF_OPER_UP
                    nla(IFLA_CARRIER, &[1]),
                    nla(IFLA_VFINFO_LIST | nested, &list),
                ],
            )
        };
        let msg = pf(0);
        assert_eq!(live_link(&pf(NLA_F_NESTED)), live_link(&msg));
        let live = live_link(&msg);
        assert_eq!(
            live,
            LiveLink {
                admin_up: true,
                carrier: true,
                vfs: Some(
                    [
                        (0, VfLinkState::Auto),
                        (3, VfLinkState::Disable),
                        (5, VfLinkState::Enable),
                        (6, VfLinkState::Auto), // a state newer than this build: follow the PF
                    ]
                    .into()
                ),
            }
        );

        // A plain link event keeps the VF list learnt before, and says the carrier is gone.
        let event = newlink(
            IFF_UP,
            &[
                nla(IFLA_IFNAME, b"ens1f0\0"),
                nla(IFLA_OPERSTATE, &[2]), // IF_OPER_DOWN
                nla(IFLA_CARRIER, &[0]),
            ],
        );
        let mut links = crate::health::LinkStates::new();
        let Some(Event::Link {
            name,
            live: Some(first),
        }) = link_event(&msg, false)
        else {
            panic!("no link event")
        };
        assert!(crate::health::update_link(&mut links, name, Some(first)));
        let Some(Event::Link { name, live: later }) = link_event(&event, false) else {
            panic!("no link event")
        };
        assert_eq!(later.as_ref().map(|l| l.vfs.is_none()), Some(true));
        assert!(crate::health::update_link(&mut links, name, later));
        assert_eq!(
            links["ens1f0"],
            LiveLink {
                admin_up: true,
                carrier: false,
                vfs: live.vfs.clone(),
            }
        );

        // The policy given that state, on the sample node: VF 3 of ens1f0 is disabled, VF 5
        // forced up survives the lost carrier, the others follow it.
        let tmp = tempfile::tempdir().unwrap();
        let paths =
            crate::fixture::materialize(&crate::fixture::sample_node(), tmp.path()).unwrap();
        let host = crate::host::discover(&paths).unwrap();
        let says = |id: &str| {
            let d = host.device(id).unwrap();
            crate::health::verdict(d, &host, &links, crate::config::HealthRule::Uplink).to_string()
        };
        assert_eq!(
            says("0000:3b:00.5"),
            "unhealthy: VF 3 disabled on PF ens1f0"
        );
        assert_eq!(
            says("0000:3b:00.7"),
            "healthy (VF 5 link forced up on PF ens1f0)"
        );
        assert_eq!(says("0000:3b:00.2"), "unhealthy: PF ens1f0 no carrier");
        assert_eq!(says("0000:3b:01.2"), "healthy");
        // No IFLA_CARRIER (old kernels): IFF_LOWER_UP says it.
        let old = newlink(IFF_UP | IFF_LOWER_UP, &[nla(IFLA_IFNAME, b"ens1f0\0")]);
        assert!(live_link(&old).carrier);
    }
}
