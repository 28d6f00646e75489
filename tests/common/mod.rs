//! Shared helpers of the integration tests that work on materialised fixture hosts.
#![allow(dead_code)] // each test crate uses a different subset

use nicplug::HostPaths;
use nicplug::config::{Format, parse_config};
use nicplug::edits::{self, ContainerEdits};
use nicplug::fixture::{self, HostSpec};
use nicplug::host::{self, Host};
use nicplug::pools::{self, Pools};

/// A materialised host and its discovered snapshot; the files live as long as this does.
pub struct Node {
    pub _tmp: tempfile::TempDir,
    pub paths: HostPaths,
    pub host: Host,
}

/// tmpfs when there is one: a 1,024-function tree is ~110,000 inodes.
pub fn tempdir() -> tempfile::TempDir {
    tempfile::tempdir_in("/dev/shm")
        .or_else(|_| tempfile::tempdir())
        .unwrap()
}

pub fn node(spec: &HostSpec) -> Node {
    let tmp = tempdir();
    let paths = fixture::materialize(spec, tmp.path()).unwrap();
    let host = host::discover(&paths).unwrap();
    Node {
        _tmp: tmp,
        paths,
        host,
    }
}

pub fn sample() -> Node {
    node(&fixture::sample_node())
}

pub fn pools_for(host: &Host, config: &str) -> Pools {
    pools::build(
        host,
        &parse_config(config, Format::Json).unwrap(),
        "intel.com",
    )
}

pub fn ids(p: &Pools, name: &str) -> Vec<String> {
    p.pool(name)
        .unwrap()
        .devices
        .iter()
        .map(|d| d.id.clone())
        .collect()
}

pub fn s(v: &[&str]) -> Vec<String> {
    v.iter().map(|x| x.to_string()).collect()
}

/// The edits for one device of a pool.
pub fn edits_for(n: &Node, p: &Pools, pool: &str, id: &str) -> ContainerEdits {
    edits::container_edits(p.pool(pool).unwrap(), &n.host, &n.paths, &s(&[id])).unwrap()
}
