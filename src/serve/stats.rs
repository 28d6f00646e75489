//! What the daemon counts as it runs (allocations, registrations, config reloads), shared by the
//! gRPC handlers, the registrars, the manager and the metrics endpoint. Atomics only: recording
//! never blocks a handler, and a scrape reads without stopping anyone.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
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
}
