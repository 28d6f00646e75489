//! Who holds which device under which resource: kubelet's word (pod resources `List`) when it
//! answers, else what this daemon handed out itself.
//!
//! Claims are `(resource, device ID)` pairs. They are added when Allocate answers (before the
//! answer leaves), confirmed or released only by a kubelet answer, and kept in a small state
//! file in the device-plugins directory so that a daemon killed and restarted while the pod
//! resources API is down still knows what it handed out. A device claimed under one resource
//! is never advertised Healthy by another pool (a config reload that moves it must wait for
//! the release), and a claimed device that left its pool is still advertised, Unhealthy, so
//! kubelet shows the loss in the pod's status instead of a silent disappearance.
//!
//! Why a file and not kubelet's own checkpoint: the checkpoint format is kubelet-internal and
//! changes between releases; ours is a handful of pairs we control.

use super::podresources::{self, Holder};
use crate::files;
use crate::inventory::Claims;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::Notify;
use tracing::{error, info, warn};

pub use crate::inventory::claims::{STATE_FILE, read_state};
/// How often kubelet is asked while a device waits for a release, and otherwise.
const POLL_PENDING: Duration = Duration::from_secs(1);
const POLL_IDLE: Duration = Duration::from_secs(10);
/// How often the DRA driver's checkpoint is looked at (a `stat`; read when it changed).
const DRA_POLL: Duration = Duration::from_secs(1);
/// How long one ask may take.
pub const ASK_TIMEOUT: Duration = Duration::from_secs(1);

/// `(namespace, pod, container)` of a holder, as kubelet names it.
pub type Owner = (String, String, String);

/// What the metrics endpoint labels allocated devices with.
#[derive(Debug, Clone, Default)]
pub struct Labels {
    /// `(id, resource)` -> holders, from kubelet's last answer, plus this daemon's claims since
    /// (with empty owners).
    pub held: BTreeMap<(String, String), Vec<Owner>>,
    /// Kubelet did not answer the last ask: the owners are the last known ones.
    pub stale: bool,
}

#[derive(Debug, Default)]
struct Inner {
    /// `(id, resource)` -> sequence number of the event that claimed it.
    claims: BTreeMap<(String, String), u64>,
    seq: u64,
    unknown: bool,
    /// Owners per `(id, resource)` from kubelet's last answer.
    owners: BTreeMap<(String, String), Vec<Owner>>,
    /// The last ask of kubelet was answered.
    up: bool,
    /// Devices wait for a release: ask kubelet more often.
    pending: bool,
    /// Device ID -> the DRA claim that holds it (the DRA driver's checkpoint on this node).
    dra: BTreeMap<String, String>,
}

/// Shared by the gRPC handlers (claims), the manager (what to advertise) and the metrics.
#[derive(Debug)]
pub struct Holders {
    inner: Mutex<Inner>,
    /// Claims changed: the inventory is told (it recomputes what each pool advertises).
    pub changed: Notify,
    /// A device began to wait for a release: the poller asks at once.
    wake: Notify,
    state: Option<PathBuf>,
    /// Serialises state file writes; each writes the claims as they are when it runs.
    writing: Mutex<()>,
}

/// A device is claimed under another resource.
#[derive(Debug, thiserror::Error)]
#[error("{id} is held under {resource} (kubelet has not released it)")]
pub struct HeldElsewhere {
    pub id: String,
    pub resource: String,
}

impl Holders {
    /// Claims from the state file at `state` (none when absent). An unreadable file leaves
    /// nothing known until kubelet answers.
    pub fn load(state: Option<PathBuf>) -> Self {
        let mut inner = Inner::default();
        if let Some(path) = &state {
            match read_state(path) {
                Ok(pairs) => {
                    if !pairs.is_empty() {
                        info!(file = %path.display(), claims = pairs.len(), "allocations of an earlier run");
                    }
                    inner.claims = pairs.into_iter().map(|p| (p, 0)).collect();
                }
                Err(e) => {
                    error!(file = %path.display(), "cannot read the allocation record ({e}); every device stays Unhealthy until kubelet's pod resources API answers (fix: make it answer, or delete the file if no pod holds a device)");
                    inner.unknown = true;
                }
            }
        }
        Holders {
            inner: Mutex::new(inner),
            changed: Notify::new(),
            wake: Notify::new(),
            state,
            writing: Mutex::new(()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn claims(&self) -> Claims {
        let inner = self.lock();
        let mut by_id: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        for (id, resource) in inner.claims.keys() {
            by_id
                .entry(id.clone())
                .or_default()
                .insert(resource.clone());
        }
        // A DRA claim is never a pool's resource name: always held elsewhere.
        for (id, claim) in &inner.dra {
            by_id.entry(id.clone()).or_default().insert(claim.clone());
        }
        Claims {
            by_id,
            unknown: inner.unknown,
        }
    }

    /// Claim `ids` under `resource`, unless one is claimed under another resource. Checked and
    /// recorded at once: a reload racing an Allocate cannot hand one device out twice. True
    /// when a claim is new (the record is then worth writing).
    pub fn claim(&self, resource: &str, ids: &[String]) -> Result<bool, HeldElsewhere> {
        let mut inner = self.lock();
        for id in ids {
            if let Some(claim) = inner.dra.get(id) {
                return Err(HeldElsewhere {
                    id: id.clone(),
                    resource: claim.clone(),
                });
            }
            let other = inner
                .claims
                .range((id.clone(), String::new())..)
                .take_while(|((i, _), _)| i == id)
                .find(|((_, r), _)| r != resource);
            if let Some(((_, r), _)) = other {
                return Err(HeldElsewhere {
                    id: id.clone(),
                    resource: r.clone(),
                });
            }
        }
        inner.seq += 1;
        let seq = inner.seq;
        let mut added = false;
        for id in ids {
            added |= inner
                .claims
                .insert((id.clone(), resource.to_string()), seq)
                .is_none();
        }
        drop(inner);
        if added {
            self.changed.notify_one();
        }
        Ok(added)
    }

    /// Take the devices DRA claims hold now (the DRA driver's checkpoint): Unhealthy in every
    /// pool and refused by Allocate until the claim is unprepared. True when they changed.
    pub fn set_dra(&self, held: BTreeMap<String, String>) -> bool {
        let mut inner = self.lock();
        if inner.dra == held {
            return false;
        }
        for (id, claim) in held.iter().filter(|(id, _)| !inner.dra.contains_key(*id)) {
            info!(id = %id, "held by {claim}: not handed out here");
        }
        inner.dra = held;
        drop(inner);
        self.changed.notify_one();
        true
    }

    /// Follow the DRA driver's checkpoint in `dir` (`<kubelet>/plugins/nicplug.io`), read
    /// whenever it changed. Unreadable: the last good read stands.
    pub async fn follow_dra(self: Arc<Self>, dir: PathBuf) {
        let path = dir.join(crate::dra::checkpoint::FILE_NAME);
        let mut versions =
            crate::inventory::watch::file_versions(path, DRA_POLL, move |_| dra_held(&dir));
        while let Some(read) = versions.recv().await {
            match read {
                Ok(held) => {
                    self.set_dra(held);
                }
                Err(e) => warn!("{e}; keeping the devices DRA claims held at the last read"),
            }
        }
    }

    /// The sequence number an ask of kubelet starts at: claims made after it are newer than
    /// the answer and survive it.
    fn ask_started(&self) -> u64 {
        let mut inner = self.lock();
        inner.seq += 1;
        inner.seq
    }

    /// Take kubelet's answer to an ask started at `asked`, or note that it did not answer.
    /// Returns true when the claims changed.
    fn observe(&self, asked: u64, answer: Result<Vec<Holder>, String>) -> bool {
        let mut inner = self.lock();
        let holders = match answer {
            Ok(h) => h,
            Err(_) => {
                inner.up = false;
                return false;
            }
        };
        let mut owners: BTreeMap<(String, String), Vec<Owner>> = BTreeMap::new();
        for h in holders {
            owners
                .entry((h.id, h.resource))
                .or_default()
                .push((h.namespace, h.pod, h.container));
        }
        let mut claims: BTreeMap<(String, String), u64> = inner
            .claims
            .iter()
            .filter(|(_, seq)| **seq > asked)
            .map(|(k, s)| (k.clone(), *s))
            .collect();
        for key in owners.keys() {
            let seq = inner.claims.get(key).copied().unwrap_or(asked);
            claims.entry(key.clone()).or_insert(seq);
        }
        let changed = claims.keys().ne(inner.claims.keys()) || inner.unknown;
        for gone in inner.claims.keys().filter(|k| !claims.contains_key(*k)) {
            info!(id = %gone.0, resource = %gone.1, "kubelet released the device");
        }
        if inner.unknown {
            info!("kubelet's pod resources API answered: the allocation record is known again");
        }
        inner.claims = claims;
        inner.owners = owners;
        inner.unknown = false;
        inner.up = true;
        changed
    }

    /// Ask kubelet once (from the poller or a scrape); wakes the manager when claims changed,
    /// and records the new claims.
    pub async fn ask(self: &Arc<Self>, socket: &Path) -> Result<(), String> {
        let asked = self.ask_started();
        let answer = podresources::list(socket, ASK_TIMEOUT).await;
        let err = answer.as_ref().err().cloned();
        if self.observe(asked, answer) {
            self.changed.notify_one();
            self.persist().await;
        }
        match err {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    /// Tell the poller whether some device waits for a release.
    pub fn set_pending(&self, pending: bool) {
        let was = std::mem::replace(&mut self.lock().pending, pending);
        if pending && !was {
            self.wake.notify_one();
        }
    }

    /// Labels for the metrics: kubelet's last answer (stale when it did not answer since) and
    /// the claims this daemon made that the answer does not list.
    pub fn labels(&self) -> Labels {
        let inner = self.lock();
        let mut held = inner.owners.clone();
        for key in inner.claims.keys() {
            held.entry(key.clone()).or_default();
        }
        Labels {
            held,
            stale: !inner.up,
        }
    }

    /// Write the claims to the state file (off the runtime threads). Failures are logged: the
    /// claims in memory still hold for this run.
    pub async fn persist(self: &Arc<Self>) {
        let Some(path) = self.state.clone() else {
            return;
        };
        let me = self.clone();
        let write = move || {
            let _one = me.writing.lock().unwrap_or_else(|e| e.into_inner());
            let body = state_text(me.lock().claims.keys());
            let dir = path.parent().unwrap_or(Path::new("."));
            let name = path
                .file_name()
                .and_then(|n| n.to_str())
                .unwrap_or(STATE_FILE);
            if let Err(e) = files::write_atomically(dir, name, body.as_bytes()) {
                warn!(file = %path.display(), "cannot write the allocation record: {e}");
            }
        };
        let _ = tokio::task::spawn_blocking(write).await;
    }

    /// Ask kubelet now and then, for as long as the daemon runs.
    pub async fn poll(self: Arc<Self>, socket: PathBuf) {
        let mut failing_since: Option<Instant> = None;
        loop {
            match self.ask(&socket).await {
                Ok(()) => {
                    if let Some(t) = failing_since.take() {
                        info!(socket = %socket.display(), down_s = t.elapsed().as_secs(), "kubelet's pod resources API answers again");
                    }
                }
                Err(e) => {
                    if failing_since.is_none() {
                        info!(socket = %socket.display(), "kubelet's pod resources API does not answer ({e}); allocations are judged by this daemon's record");
                        failing_since = Some(Instant::now());
                    }
                }
            }
            let pending = self.lock().pending;
            let pause = if pending { POLL_PENDING } else { POLL_IDLE };
            tokio::select! {
                _ = tokio::time::sleep(pause) => {}
                _ = self.wake.notified() => {}
            }
        }
    }
}

/// Device ID -> `DRA claim <namespace>/<name> (<uid>)` for every device of the DRA checkpoint
/// in `dir`; none when there is no checkpoint.
pub fn dra_held(dir: &Path) -> Result<BTreeMap<String, String>, String> {
    let cp = crate::dra::checkpoint::Checkpoint::load(dir).map_err(|e| e.to_string())?;
    let mut held = BTreeMap::new();
    for c in cp.claims() {
        let claim = format!(
            "DRA claim {}/{} ({})",
            c.claim.namespace, c.claim.name, c.claim.uid
        );
        for d in &c.devices {
            held.insert(d.id.clone(), claim.clone());
        }
    }
    Ok(held)
}

fn state_text<'a>(pairs: impl Iterator<Item = &'a (String, String)>) -> String {
    let claims: Vec<serde_json::Value> = pairs
        .map(|(i, r)| serde_json::json!({"resource": r, "id": i}))
        .collect();
    let doc = serde_json::json!({
        "what": "devices nicplug handed out, per resource, not yet released by kubelet",
        "version": 1,
        "claims": claims,
    });
    format!("{doc:#}\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_dra_claim_holds_against_every_resource_and_survives_kubelet_answers() {
        let h = Holders::load(None);
        let dra = BTreeMap::from([("a".to_string(), "DRA claim ns/c (u)".to_string())]);
        assert!(h.set_dra(dra.clone()));
        assert!(!h.set_dra(dra), "unchanged is no change");
        let e = h.claim("r", &["a".into()]).unwrap_err();
        assert_eq!(e.resource, "DRA claim ns/c (u)");
        assert!(h.claim("r", &["b".into()]).unwrap());
        // Kubelet's answer knows nothing of DRA claims: they stay.
        let asked = h.ask_started();
        h.observe(asked, Ok(vec![]));
        assert_eq!(h.claims().elsewhere("r", "a"), Some("DRA claim ns/c (u)"));
        assert!(h.set_dra(BTreeMap::new()));
        assert!(h.claim("r", &["a".into()]).is_ok());
    }

    fn holder(resource: &str, id: &str) -> Holder {
        Holder {
            resource: resource.into(),
            id: id.into(),
            namespace: "ns".into(),
            pod: "p".into(),
            container: "c".into(),
        }
    }

    #[test]
    fn a_claim_under_one_resource_blocks_the_others_until_released() {
        let h = Holders::load(None);
        h.claim("a/x", &["d1".into()]).unwrap();
        let err = h.claim("a/y", &["d1".into()]).unwrap_err();
        assert_eq!(err.resource, "a/x");
        assert_eq!(h.claims().elsewhere("a/y", "d1"), Some("a/x"));
        assert_eq!(h.claims().elsewhere("a/x", "d1"), None);
        // Kubelet down: nothing is released.
        let asked = h.ask_started();
        assert!(!h.observe(asked, Err("down".into())));
        assert!(h.labels().stale);
        assert_eq!(h.claims().elsewhere("a/y", "d1"), Some("a/x"));
        // Kubelet answers without it: released.
        let asked = h.ask_started();
        assert!(h.observe(asked, Ok(vec![])));
        assert_eq!(h.claims().elsewhere("a/y", "d1"), None);
        h.claim("a/y", &["d1".into()]).unwrap();
    }

    #[test]
    fn a_claim_made_during_an_ask_survives_its_answer() {
        let h = Holders::load(None);
        let asked = h.ask_started();
        h.claim("a/x", &["d1".into()]).unwrap();
        h.observe(asked, Ok(vec![holder("a/x", "d2")]));
        let c = h.claims();
        assert!(c.by_id.contains_key("d1") && c.by_id.contains_key("d2"));
    }

    #[tokio::test]
    async fn the_record_survives_a_restart_and_an_unreadable_one_blocks_everything() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(STATE_FILE);
        let h = Arc::new(Holders::load(Some(path.clone())));
        h.claim("a/x", &["d1".into()]).unwrap();
        h.persist().await;
        let again = Holders::load(Some(path.clone()));
        assert_eq!(again.claims().elsewhere("a/y", "d1"), Some("a/x"));
        assert!(!again.claims().unknown);

        std::fs::write(&path, "{not json").unwrap();
        let broken = Holders::load(Some(path.clone()));
        assert!(broken.claims().elsewhere("a/y", "d9").is_some());
        let asked = broken.ask_started();
        assert!(broken.observe(asked, Ok(vec![])));
        assert_eq!(broken.claims().elsewhere("a/y", "d9"), None);

        std::fs::remove_file(&path).unwrap();
        assert!(!Holders::load(Some(path)).claims().unknown);
    }
}
