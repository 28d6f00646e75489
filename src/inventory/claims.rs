//! Who holds which device under which resource, as plain data: the inventory's input from the
//! front end that hands devices out (the device plugin's `holders`: kubelet's pod resources
//! answer and its own record). A device claimed under one resource is never advertised
//! Healthy by another pool, and one claimed that left its pool stays listed, Unhealthy.

use std::collections::{BTreeMap, BTreeSet};

/// What the pools need to know: device ID -> resources it is claimed under.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Claims {
    pub by_id: BTreeMap<String, BTreeSet<String>>,
    /// Nothing is known (the state file was unreadable and kubelet has not answered yet):
    /// every device counts as held by someone else.
    pub unknown: bool,
}

impl Claims {
    /// The resource, other than `resource`, that holds `id`, if any.
    pub fn elsewhere(&self, resource: &str, id: &str) -> Option<&str> {
        if self.unknown {
            return Some("(unknown: no record and no answer from kubelet)");
        }
        self.by_id
            .get(id)?
            .iter()
            .find(|r| r.as_str() != resource)
            .map(String::as_str)
    }

    /// Devices claimed under `resource`.
    pub fn of(&self, resource: &str) -> impl Iterator<Item = &str> {
        self.by_id
            .iter()
            .filter(move |(_, rs)| rs.contains(resource))
            .map(|(id, _)| id.as_str())
    }
}
