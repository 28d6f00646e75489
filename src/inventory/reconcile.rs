//! The reconcile core: events in, one new [`Inventory`] out. Synchronous and free of timers,
//! so tests drive it with injected events on a fixture tree; the task in [`super::start`] runs
//! it in the blocking pool (it reads sysfs and the config file).

use super::claims::Claims;
use super::view::{PoolView, log_health_changes};
use super::watch::Event;
use super::{ConfigCheck, ConfigReloads, Inventory, InventoryError, InventoryOptions};
use crate::HostPaths;
use crate::config::{self, Config, ConfigError};
use crate::health::{self, LinkStates};
use crate::host::{self, Host, Scope, Skipped};
use crate::pools;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use tracing::{error, info, warn};

/// The inventory's state between events: the last good config, the host snapshot, the live
/// link states and the claims; and the inventory last published.
pub struct Reconciler {
    config_path: PathBuf,
    default_prefix: String,
    check: Option<ConfigCheck>,
    paths: Arc<HostPaths>,
    /// The last good config, and the bytes last read (good or not).
    config: Arc<Config>,
    config_bytes: Vec<u8>,
    host: Arc<Host>,
    links: LinkStates,
    claims: Claims,
    reloads: ConfigReloads,
    current: Arc<Inventory>,
    /// `(resource, id)` advertised Unhealthy because of a claim -> why, as last logged.
    blocked: BTreeMap<(String, String), String>,
}

impl Reconciler {
    /// Read the config and the host (blocking: call it off the runtime threads), with no
    /// link states yet and `opts.claims`.
    pub fn new(opts: &InventoryOptions) -> Result<Self, InventoryError> {
        let (bytes, config) = first_config(opts)?;
        let host = host::discover(&opts.paths)?;
        Ok(Self::with(opts, bytes, config, host, LinkStates::new()))
    }

    /// From what was read already; builds the first inventory (generation 1).
    pub(super) fn with(
        opts: &InventoryOptions,
        config_bytes: Vec<u8>,
        config: Config,
        host: Host,
        links: LinkStates,
    ) -> Self {
        log_skipped(&[], &host.skipped);
        let paths = Arc::new(opts.paths.clone());
        let host = Arc::new(host);
        let config = Arc::new(config);
        let current = Arc::new(Inventory {
            generation: 0,
            pools_generation: 0,
            host: host.clone(),
            paths: paths.clone(),
            config: config.clone(),
            pools: BTreeMap::new(),
            config_reloads: ConfigReloads::default(),
        });
        let mut r = Reconciler {
            config_path: opts.config_path.clone(),
            default_prefix: opts.default_prefix.clone(),
            check: opts.config_check.clone(),
            paths,
            config,
            config_bytes,
            host,
            links,
            claims: opts.claims.clone(),
            reloads: ConfigReloads::default(),
            current,
            blocked: BTreeMap::new(),
        };
        r.publish(true);
        r
    }

    /// The inventory last published.
    pub fn current(&self) -> Arc<Inventory> {
        self.current.clone()
    }

    /// Take a batch of events; a new inventory when anything it shows changed. Several
    /// rescans in one batch are one read of their scopes merged; a config touched is one
    /// read of the file.
    pub fn apply(&mut self, events: Vec<Event>) -> Option<Arc<Inventory>> {
        let (mut rescan, mut reload, mut links_changed) = (None::<(&str, Scope)>, false, false);
        let mut claims_changed = false;
        for ev in events {
            match ev {
                Event::ConfigTouched => reload = true,
                Event::Rescan { why, scope } => {
                    rescan = Some(match rescan {
                        Some((_, seen)) => (why, seen.merge(scope)),
                        None => (why, scope),
                    })
                }
                Event::LinksDumped => {}
                Event::Link { name, live } => {
                    links_changed |= health::update_link(&mut self.links, name, live)
                }
                Event::Claims(claims) => {
                    if claims != self.claims {
                        self.claims = claims;
                        claims_changed = true;
                    }
                }
            }
        }
        let reloads_before = self.reloads;
        let config_changed = reload && self.reload_config();
        let host_changed = match rescan {
            Some((why, scope)) => self.rescan(why, scope),
            None => false,
        };
        if config_changed || host_changed {
            self.publish(true);
        } else if links_changed || claims_changed || self.reloads != reloads_before {
            self.publish(false);
        } else {
            return None;
        }
        Some(self.current.clone())
    }

    /// Re-read the config if its bytes changed; true when a new good config was taken.
    fn reload_config(&mut self) -> bool {
        let path = &self.config_path;
        let (bytes, parsed) = match load_config(path, Some(&self.config_bytes), self.check.as_ref())
        {
            // Mid-swap, or gone: keep the last good config; the next event retries.
            Load::Unreadable(_) | Load::Unchanged => return false,
            Load::Read { bytes, parsed } => (bytes, parsed),
        };
        self.config_bytes = bytes;
        match parsed {
            Ok(config) => {
                info!(config = %path.display(), resources = config.resources.len(), "config reloaded");
                self.reloads.ok += 1;
                self.config = Arc::new(config);
                true
            }
            Err(e) => {
                error!(config = %path.display(), "config rejected; still serving the last good config:\n{e}");
                self.reloads.failed += 1;
                false
            }
        }
    }

    /// Read sysfs again, only `scope` of it when the event said; true when the snapshot changed.
    fn rescan(&mut self, why: &str, scope: Scope) -> bool {
        let read = match &scope {
            Scope::All => "full".to_string(),
            Scope::Functions(f) => format!("{} function(s)", f.len()),
        };
        let host = match host::reread(&self.paths, &self.host, &scope) {
            Ok(host::Reread::Same) => return false,
            Ok(host::Reread::Changed(h)) => h,
            Err(e) => {
                error!("rescan ({why}) failed; keeping the last snapshot: {e}");
                return false;
            }
        };
        log_skipped(&self.host.skipped, &host.skipped);
        info!(why, %read, functions = host.functions.len(), "host changed");
        self.host = Arc::new(host);
        true
    }

    /// A new inventory from the current state: pools built again when `rebuild` (config or
    /// host changed), else the same pools with fresh health and claims.
    fn publish(&mut self, rebuild: bool) {
        let pools: Vec<pools::Pool> = if rebuild {
            pools::build(&self.host, &self.config, &self.default_prefix).pools
        } else {
            self.current
                .pools
                .values()
                .map(|v| v.pool.clone())
                .collect()
        };
        let mut views = BTreeMap::new();
        for pool in pools {
            let mut view = PoolView::new(pool, self.host.clone(), self.paths.clone(), &self.links);
            view.hold(&self.claims);
            let view = match self.current.pools.get(&view.pool.name) {
                // Nothing it shows changed (a claim elsewhere, a link of another pool): the
                // old view stays, and the front ends see no news for this pool.
                Some(old) if old.same_as(&view) => old.clone(),
                Some(old) => {
                    log_health_changes(old, &view);
                    Arc::new(view)
                }
                None => Arc::new(view),
            };
            views.insert(view.pool.name.clone(), view);
        }
        self.log_blocked(&views);
        let old = &self.current;
        self.current = Arc::new(Inventory {
            generation: old.generation + 1,
            pools_generation: old.pools_generation + u64::from(rebuild),
            host: self.host.clone(),
            paths: self.paths.clone(),
            config: self.config.clone(),
            pools: views,
            config_reloads: self.reloads,
        });
    }

    /// Say which devices a claim keeps Unhealthy, once per change.
    fn log_blocked(&mut self, views: &BTreeMap<String, Arc<PoolView>>) {
        let mut now = BTreeMap::new();
        for v in views.values() {
            for (id, other) in &v.held_elsewhere {
                now.insert(
                    (v.pool.name.clone(), id.clone()),
                    format!("held under {other}"),
                );
            }
            for id in &v.ghosts {
                now.insert(
                    (v.pool.name.clone(), id.clone()),
                    "allocated, and gone from the pool".to_string(),
                );
            }
        }
        for ((resource, id), why) in &now {
            if self.blocked.get(&(resource.clone(), id.clone())) != Some(why) {
                warn!(%resource, %id, "advertised Unhealthy until kubelet releases it: {why}");
            }
        }
        for (resource, id) in self.blocked.keys().filter(|k| !now.contains_key(*k)) {
            info!(%resource, %id, "released by kubelet; advertised by its health again");
        }
        self.blocked = now;
    }
}

/// The config at start: unreadable or bad is an error (there is no last good one yet).
pub(super) fn first_config(opts: &InventoryOptions) -> Result<(Vec<u8>, Config), InventoryError> {
    let err = |source| InventoryError::Config {
        path: opts.config_path.clone(),
        source,
    };
    match load_config(&opts.config_path, None, opts.config_check.as_ref()) {
        Load::Unreadable(source)
        | Load::Read {
            parsed: Err(source),
            ..
        } => Err(err(source)),
        // Nothing to compare with: cannot happen; said as what it would mean.
        Load::Unchanged => Err(err(ConfigError::Read {
            path: opts.config_path.clone(),
            source: std::io::Error::other("unchanged without an earlier read"),
        })),
        Load::Read {
            bytes,
            parsed: Ok(config),
        } => Ok((bytes, config)),
    }
}

/// What reading the config file gave.
enum Load {
    Unreadable(ConfigError),
    /// The same bytes as last time.
    Unchanged,
    Read {
        bytes: Vec<u8>,
        parsed: Result<Config, ConfigError>,
    },
}

/// Read the config file once and parse those very bytes: a swap between a read and a parse
/// can no longer serve a file that is not on disk. Bounded and never blocking on a planted
/// FIFO ([`config::read_config_bytes`]); the front end's extra rules are checked on the same
/// thread.
fn load_config(path: &std::path::Path, last: Option<&[u8]>, check: Option<&ConfigCheck>) -> Load {
    let bytes = match config::read_config_bytes(path) {
        Ok(b) => b,
        Err(e) => return Load::Unreadable(e),
    };
    if last == Some(&bytes[..]) {
        return Load::Unchanged;
    }
    let parsed = config::parse_config_bytes(path, bytes.clone()).and_then(|c| match check {
        Some(check) => check(&c).map(|()| c),
        None => Ok(c),
    });
    Load::Read { bytes, parsed }
}

/// Warn about functions newly skipped; say when one recovers.
fn log_skipped(before: &[Skipped], now: &[Skipped]) {
    for s in now.iter().filter(|s| !before.contains(s)) {
        warn!(function = %s.address, file = %s.file.display(), "skipping function: {}", s.reason);
    }
    for s in before
        .iter()
        .filter(|b| !now.iter().any(|n| n.address == b.address))
    {
        info!(function = %s.address, "function readable again");
    }
}
