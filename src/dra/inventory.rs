//! The DRA driver's subscription to the core inventory ([`crate::inventory`]): the same
//! watchers, config rules, health policy and rtnetlink link states as the device plugin, so
//! both front ends see one node the same way. This module only says which part of an
//! inventory DRA serves: the exclusive pools (an RDMA shared pool's IDs are tokens, not
//! devices) and the health verdicts of their devices.
//!
//! The device plugin's record of what it handed out (`nicplug-holders.json`) is followed as
//! the inventory's claims, each under a name no pool has: a device a device-plugin pod holds
//! is then Unhealthy here by the device plugin's own rule (held elsewhere), so no claim is
//! prepared for it while both front ends run on one node by mistake.

use crate::HostPaths;
use crate::health::Verdict;
use crate::inventory::claims::read_state;
use crate::inventory::watch;
use crate::inventory::{
    self, Claims, Event, Inventory, InventoryError, InventoryOptions, InventoryTask,
};
use crate::pools::Pool;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use tracing::{info, warn};

/// How often the device plugin's record is looked at (a `stat`; read when it changed).
const RECORD_POLL: Duration = Duration::from_secs(1);

/// Where the inventory comes from.
#[derive(Debug, Clone)]
pub struct Source {
    pub paths: HostPaths,
    /// The device-plugin config: its pools select which functions are DRA devices.
    pub config: PathBuf,
    pub default_prefix: String,
    /// Safety-net rescan period (a lost event is caught here at the latest).
    pub rescan: Duration,
    /// The device plugin's record (`<device-plugins>/nicplug-holders.json`) to follow.
    pub device_plugin_record: Option<PathBuf>,
}

impl Source {
    fn options(&self) -> InventoryOptions {
        InventoryOptions {
            rescan_interval: self.rescan,
            claims: self
                .device_plugin_record
                .as_deref()
                .map_or_else(Claims::default, |p| {
                    read_record(p).unwrap_or_else(|e| {
                        warn!(record = %p.display(), "cannot read the device plugin's record: {e}");
                        Claims::default()
                    })
                }),
            ..InventoryOptions::new(
                self.paths.clone(),
                self.config.clone(),
                self.default_prefix.clone(),
            )
        }
    }
}

/// Start the inventory with every watcher on, and the device plugin's record followed; the
/// receiver holds the first inventory (the record's claims in it already). A bad config here
/// is an error; later, a bad change keeps the last good config.
pub async fn start(
    src: &Source,
) -> Result<(InventoryTask, tokio::sync::watch::Receiver<Arc<Inventory>>), InventoryError> {
    let s = src.clone();
    let opts = tokio::task::spawn_blocking(move || s.options())
        .await
        .map_err(|e| InventoryError::Task {
            what: "reading the device plugin's record",
            message: e.to_string(),
        })?;
    let first = opts.claims.clone();
    let (task, rx) = inventory::start(opts).await?;
    if let Some(record) = &src.device_plugin_record {
        tokio::spawn(follow_record(record.clone(), first, task.sender()));
    }
    Ok((task, rx))
}

/// Read the inventory once, without watchers (`publish --once`). Blocking.
pub fn read(src: &Source) -> Result<Arc<Inventory>, InventoryError> {
    Ok(inventory::Reconciler::new(&src.options())?.current())
}

/// The device plugin's record as claims. Each resource is named so that it is never a pool's
/// name (the same config gives both front ends the same names): every device in it is held
/// elsewhere, and the verdict says where.
pub fn read_record(path: &Path) -> Result<Claims, String> {
    let mut claims = Claims::default();
    for (id, resource) in read_state(path)? {
        let holder = format!("{resource} of the device plugin ({})", path.display());
        claims.by_id.entry(id).or_default().insert(holder);
    }
    Ok(claims)
}

/// Keep the inventory's claims equal to the record, read whenever it changed. An unreadable
/// record keeps the last claims (said once per version of the file).
async fn follow_record(record: PathBuf, mut last: Claims, events: mpsc::Sender<Event>) {
    let mut versions = watch::file_versions(record.clone(), RECORD_POLL, read_record);
    while let Some(read) = versions.recv().await {
        match read {
            Ok(claims) if claims != last => {
                info!(record = %record.display(), devices = claims.by_id.len(), "the device plugin's allocations changed");
                last = claims.clone();
                if events.send(Event::Claims(claims)).await.is_err() {
                    return;
                }
            }
            Ok(_) => {}
            Err(e) => {
                warn!(record = %record.display(), "cannot read the device plugin's record, keeping what it said last: {e}")
            }
        }
    }
}

/// The pools whose devices are DRA devices, in name order.
pub fn exclusive(inv: &Inventory) -> impl Iterator<Item = &Pool> {
    inv.pools
        .values()
        .map(|v| &v.pool)
        .filter(|p| p.shared.is_none())
}

/// Devices the device plugin holds (from its record): not offered to the scheduler.
pub fn held(inv: &Inventory) -> std::collections::BTreeSet<String> {
    inv.pools
        .values()
        .filter(|v| v.pool.shared.is_none())
        .flat_map(|v| v.held_elsewhere.keys().cloned())
        .collect()
}

/// Each DRA device's health, by the device plugin's verdict: device ID -> verdict.
pub fn health(inv: &Inventory) -> BTreeMap<String, Verdict> {
    let mut out = BTreeMap::new();
    for view in inv.pools.values().filter(|v| v.pool.shared.is_none()) {
        for d in &view.pool.devices {
            let verdict = Verdict {
                healthy: view.healthy(&d.id).unwrap_or(false),
                reason: view
                    .reason(&d.id)
                    .cloned()
                    .unwrap_or(crate::health::Reason::Gone),
            };
            out.insert(d.id.clone(), verdict);
        }
    }
    out
}
