//! What the daemon counts as it runs (allocations, registrations, config reloads), shared by the
//! gRPC handlers, the registrars, the manager and the metrics endpoint. Atomics only: recording
//! never blocks a handler, and a scrape reads without stopping anyone.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::AtomicU64;
use std::time::SystemTime;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PoolLabels {
    pub resource: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabels {
    /// `success` or `failure`.
    pub result: String,
}

#[derive(Debug, Default)]
pub struct Stats {
    /// Container allocations answered, per resource.
    pub allocations: Family<PoolLabels, Counter>,
    /// Container allocations refused (unknown or unhealthy IDs), per resource.
    pub allocation_errors: Family<PoolLabels, Counter>,
    /// Successful registrations with kubelet, per resource.
    pub registrations: Family<PoolLabels, Counter>,
    /// Config reloads (changed bytes) by outcome; the first load is not a reload.
    pub config_reloads: Family<ResultLabels, Counter>,
    /// Unix time (seconds) the config now serving was read.
    pub config_last_success: Gauge<f64, AtomicU64>,
    /// Readiness: the pools served now (resource -> endpoint serving), the kubelet life each
    /// last registered with, and kubelet's registration socket.
    ready: Mutex<Readiness>,
}

/// Identity of one kubelet life: its socket's device, inode and change time (a restarted
/// kubelet makes a new socket; an inode number alone may be reused at once).
pub type KubeletLife = (u64, u64, i64, i64);

/// The kubelet life behind `sock`, `None` when it is not there.
pub fn kubelet_life(sock: &std::path::Path) -> Option<KubeletLife> {
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::metadata(sock).ok()?;
    Some((m.dev(), m.ino(), m.ctime(), m.ctime_nsec()))
}

#[derive(Debug, Default)]
struct Readiness {
    kubelet_socket: Option<std::path::PathBuf>,
    pools: BTreeMap<String, bool>,
    registered: BTreeMap<String, KubeletLife>,
}

impl Stats {
    fn pool(resource: &str) -> PoolLabels {
        PoolLabels {
            resource: resource.to_string(),
        }
    }

    /// Make a pool's counters exist (at 0) before anything happens to it.
    pub fn pool_seen(&self, resource: &str) {
        let l = Self::pool(resource);
        let _ = self.allocations.get_or_create(&l);
        let _ = self.allocation_errors.get_or_create(&l);
        let _ = self.registrations.get_or_create(&l);
    }

    pub fn allocated(&self, resource: &str) {
        self.allocations.get_or_create(&Self::pool(resource)).inc();
    }

    pub fn allocation_failed(&self, resource: &str) {
        self.allocation_errors
            .get_or_create(&Self::pool(resource))
            .inc();
    }

    pub fn registered(&self, resource: &str) {
        self.registrations
            .get_or_create(&Self::pool(resource))
            .inc();
    }

    /// A config was taken (`true`: the initial load or a good reload) or rejected.
    pub fn config_loaded(&self, ok: bool, reload: bool) {
        if reload {
            let result = if ok { "success" } else { "failure" };
            self.config_reloads
                .get_or_create(&ResultLabels {
                    result: result.into(),
                })
                .inc();
        }
        if ok {
            let now = SystemTime::now()
                .duration_since(SystemTime::UNIX_EPOCH)
                .map_or(0.0, |d| d.as_secs_f64());
            self.config_last_success.set(now);
        }
    }

    pub fn set_kubelet_socket(&self, sock: std::path::PathBuf) {
        self.ready_lock().kubelet_socket = Some(sock);
    }

    /// The pools now served: resource -> its endpoint is up.
    pub fn set_pools(&self, pools: impl IntoIterator<Item = (String, bool)>) {
        self.ready_lock().pools = pools.into_iter().collect();
    }

    /// `resource` registered with the kubelet of this life.
    pub fn registered_with(&self, resource: &str, life: Option<KubeletLife>) {
        let mut r = self.ready_lock();
        match life {
            Some(l) => r.registered.insert(resource.to_string(), l),
            None => r.registered.remove(resource),
        };
    }

    fn ready_lock(&self) -> std::sync::MutexGuard<'_, Readiness> {
        self.ready.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Ready: at least one pool, every pool's endpoint up and registered with the kubelet now
    /// running. `Err` lists what is not (one line each).
    pub fn readiness(&self) -> Result<(), Vec<String>> {
        let r = self.ready_lock();
        let now = r.kubelet_socket.as_deref().and_then(kubelet_life);
        let mut problems = Vec::new();
        if r.pools.is_empty() {
            problems.push("no resource pools are served".to_string());
        }
        if now.is_none() {
            problems.push(match &r.kubelet_socket {
                Some(s) => format!("kubelet is not running: no {}", s.display()),
                None => "kubelet socket unknown".to_string(),
            });
        }
        for (resource, serving) in &r.pools {
            if !serving {
                problems.push(format!("{resource}: plugin socket not served"));
            } else if now.is_some() && r.registered.get(resource) != now.as_ref() {
                problems.push(format!(
                    "{resource}: not registered with the running kubelet"
                ));
            }
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(problems)
        }
    }
}
