//! `nicplug doctor`: run inside a pod, unprivileged, to tell why DPDK on a ConnectX function
//! does not work there, one check per line, each with what was found and the exact fix.
//!
//! The core is pure over files: [`run`] takes the sysfs, `/dev` and procfs roots (a
//! [`HostPaths`]) and the environment as a map, and returns a [`Report`] (plain data) that the
//! CLI renders as a table or JSON. Tests point the roots at fixture trees.

mod checks;
mod function;
mod host_sysfs;
pub mod pod_view;
pub mod procfs;
pub mod render;

use crate::HostPaths;
use crate::host::{is_bdf, is_sf_name};
use procfs::{Limit, Mount, NetDevCounters};
use serde::Serialize;
use std::collections::BTreeMap;
use std::fs;

/// What the doctor examines.
#[derive(Debug, Clone)]
pub struct Input {
    /// sysfs, `/dev` and procfs roots (in a pod: `/sys`, `/dev`, `/proc`).
    pub paths: HostPaths,
    /// The container's environment (`PCIDEVICE_*`, `NICPLUG_EAL_ARGS_*`).
    pub env: BTreeMap<String, String>,
    /// Functions named with `--device`; when non-empty, the environment's `PCIDEVICE_*` lists
    /// are not used.
    pub devices: Vec<String>,
    /// The virtual address whose `self/pagemap` entry to read. `None`: a freshly touched page
    /// of this process (the real probe); tests give `Some(0)` and a stand-in file.
    pub pagemap_addr: Option<u64>,
}

impl Input {
    /// This process in its own pod: the given roots, the process environment.
    pub fn from_process(paths: HostPaths, devices: Vec<String>) -> Self {
        Input {
            paths,
            env: std::env::vars().collect(),
            devices,
            pagemap_addr: None,
        }
    }
}

/// Verdict of one check.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Pass,
    Warn,
    Fail,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Pass => "pass",
            Status::Warn => "warn",
            Status::Fail => "fail",
        }
    }
}

/// The checks, by their stable names (JSON `check`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum CheckId {
    /// Some function was allocated (env or `--device`).
    Allocation,
    /// `/sys` is this pod's own sysfs, not the host's (field failure 1).
    HostSysfs,
    /// The function exists in sysfs and is bound to mlx5.
    Function,
    /// The function's netdev is in this network namespace.
    Netdev,
    /// `/dev/infiniband/uverbsN` exists with the number sysfs gives (field failure 2).
    Uverbs,
    /// `hw_counters` readable for every port of the function's RDMA device (field failure 4).
    Counters,
    /// EAL can run in IOVA-as-VA mode (field failure 3).
    Iova,
    /// A writable hugetlbfs mount and free hugepages.
    Hugepages,
    /// RLIMIT_MEMLOCK or CAP_IPC_LOCK for memory registration.
    Memlock,
    /// CAP_NET_RAW for raw packet queues.
    NetRaw,
    /// CAP_SYS_ADMIN / privileged: not needed.
    SysAdmin,
}

impl CheckId {
    pub fn as_str(self) -> &'static str {
        match self {
            CheckId::Allocation => "allocation",
            CheckId::HostSysfs => "host-sysfs",
            CheckId::Function => "function",
            CheckId::Netdev => "netdev",
            CheckId::Uverbs => "uverbs",
            CheckId::Counters => "counters",
            CheckId::Iova => "iova",
            CheckId::Hugepages => "hugepages",
            CheckId::Memlock => "memlock",
            CheckId::NetRaw => "net-raw",
            CheckId::SysAdmin => "sys-admin",
        }
    }
}

/// One line of the report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Check {
    pub check: CheckId,
    /// The function this check is about (`None` for pod-wide checks).
    pub function: Option<String>,
    pub status: Status,
    /// What was found, with the files it was read from where that helps.
    pub found: String,
    /// The exact fix (`None` when the check passed).
    pub fix: Option<String>,
    /// Which failure of the field report this check detects (1-4), when one.
    pub field_failure: Option<u8>,
}

impl Check {
    fn new(check: CheckId, function: Option<&str>, status: Status, found: String) -> Self {
        Check {
            check,
            function: function.map(str::to_string),
            status,
            found,
            fix: None,
            field_failure: None,
        }
    }

    fn pass(check: CheckId, function: Option<&str>, found: String) -> Self {
        Check::new(check, function, Status::Pass, found)
    }

    fn warn(check: CheckId, function: Option<&str>, found: String, fix: String) -> Self {
        Check::new(check, function, Status::Warn, found).with_fix(fix)
    }

    fn fail(check: CheckId, function: Option<&str>, found: String, fix: String) -> Self {
        Check::new(check, function, Status::Fail, found).with_fix(fix)
    }

    fn with_fix(mut self, fix: String) -> Self {
        self.fix = Some(fix);
        self
    }

    fn field(mut self, n: u8) -> Self {
        self.field_failure = Some(n);
        self
    }
}

/// An allocated function as the environment (or `--device`) names it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Allocated {
    /// PCI address or `mlx5_core.sf.N`.
    pub id: String,
    /// The variable that listed it, or `--device`.
    pub source: String,
    /// `rdma.rdma_dev` of the `_INFO` JSON, when given.
    pub rdma_dev: Option<String>,
    /// `rdma.uverbs` of the `_INFO` JSON, when given.
    pub uverbs: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Counts {
    pub pass: usize,
    pub warn: usize,
    pub fail: usize,
}

/// Everything the doctor found: `ok` is false when any check failed (warnings do not count).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Report {
    pub ok: bool,
    pub functions: Vec<Allocated>,
    pub checks: Vec<Check>,
    pub counts: Counts,
}

impl Report {
    /// The checks of one kind (for one function, when given).
    pub fn find(&self, check: CheckId, function: Option<&str>) -> Option<&Check> {
        self.checks
            .iter()
            .find(|c| c.check == check && (function.is_none() || c.function.as_deref() == function))
    }
}

/// Why `--eal-args` has nothing to print.
#[derive(Debug, thiserror::Error)]
pub enum DoctorError {
    #[error(
        "no allocated functions: no PCIDEVICE_* variable in the environment and no --device given"
    )]
    NoFunctions,
}

/// The allocated functions: `--device` IDs, else every `PCIDEVICE_*` variable that is not
/// `_INFO` (comma-separated IDs), in variable-name order, then the HCAs of RDMA shared pools
/// (`NICPLUG_RDMA_PCI_*`), each ID once.
pub fn allocated(input: &Input) -> Vec<Allocated> {
    let info = info_records(&input.env);
    let mut out: Vec<Allocated> = Vec::new();
    let mut add = |id: &str, source: &str| {
        let id = id.trim();
        if id.is_empty() || out.iter().any(|a| a.id == id) {
            return;
        }
        let (rdma_dev, uverbs) = info.get(id).cloned().unwrap_or_default();
        out.push(Allocated {
            id: id.to_string(),
            source: source.to_string(),
            rdma_dev,
            uverbs,
        });
    };
    if !input.devices.is_empty() {
        for d in &input.devices {
            add(d, "--device");
        }
        return out;
    }
    for (key, value) in &input.env {
        if key.starts_with("PCIDEVICE_") && !key.ends_with("_INFO") {
            for id in value.split(',') {
                add(id, key);
            }
        }
    }
    // An RDMA shared pool's HCAs: `NICPLUG_RDMA_PCI_*`, their ibdevs in the matching
    // `NICPLUG_RDMA_IBDEVS_*` at the same positions.
    for (key, value) in &input.env {
        let Some(pool) = key.strip_prefix("NICPLUG_RDMA_PCI_") else {
            continue;
        };
        let ibdevs: Vec<&str> = input
            .env
            .get(&format!("NICPLUG_RDMA_IBDEVS_{pool}"))
            .map(|v| v.split(',').collect())
            .unwrap_or_default();
        for (i, id) in value.split(',').enumerate() {
            let id = id.trim();
            if id.is_empty() || out.iter().any(|a| a.id == id) {
                continue;
            }
            out.push(Allocated {
                id: id.to_string(),
                source: key.clone(),
                rdma_dev: ibdevs.get(i).map(|s| s.trim().to_string()),
                uverbs: None,
            });
        }
    }
    out
}

type InfoRecord = (Option<String>, Option<String>);

/// `id -> (rdma_dev, uverbs)` from every `PCIDEVICE_*_INFO` JSON (malformed ones ignored).
fn info_records(env: &BTreeMap<String, String>) -> BTreeMap<String, InfoRecord> {
    let mut out = BTreeMap::new();
    for (key, value) in env {
        if !(key.starts_with("PCIDEVICE_") && key.ends_with("_INFO")) {
            continue;
        }
        let Ok(serde_json::Value::Object(map)) = serde_json::from_str(value) else {
            continue;
        };
        for (id, entry) in map {
            let field = |k: &str| {
                entry
                    .pointer(&format!("/rdma/{k}"))
                    .and_then(|v| v.as_str())
                    .map(str::to_string)
            };
            out.insert(id, (field("rdma_dev"), field("uverbs")));
        }
    }
    out
}

/// DPDK EAL arguments for the allocated functions: with `--device`, computed; else the
/// `NICPLUG_EAL_ARGS_*` values when set (merged, each `-a X` and option once); else computed
/// from the `PCIDEVICE_*` lists: `-a <bdf>` / `-a auxiliary:<sf>` per function plus
/// `--iova-mode=va`.
pub fn eal_args(input: &Input) -> Result<String, DoctorError> {
    let given: Vec<&String> = input
        .env
        .iter()
        .filter(|(k, _)| k.starts_with("NICPLUG_EAL_ARGS_"))
        .map(|(_, v)| v)
        .collect();
    if input.devices.is_empty() && !given.is_empty() {
        let mut units: Vec<String> = Vec::new();
        for value in given {
            let mut tokens = value.split_whitespace();
            while let Some(t) = tokens.next() {
                let unit = match (t, ["-a", "--allow", "-b", "--block"].contains(&t)) {
                    (_, true) => format!("{t} {}", tokens.next().unwrap_or_default()),
                    (t, false) => t.to_string(),
                };
                if !units.contains(&unit) {
                    units.push(unit);
                }
            }
        }
        return Ok(units.join(" "));
    }
    let functions = allocated(input);
    if functions.is_empty() {
        return Err(DoctorError::NoFunctions);
    }
    let mut args: Vec<String> = functions
        .iter()
        .map(|f| crate::edits::eal_allow(&f.id, is_sf_name(&f.id)))
        .collect();
    args.push(crate::edits::IOVA_VA.into());
    Ok(args.join(" "))
}

/// Whether an ID may become part of a sysfs path.
fn valid_id(id: &str) -> bool {
    is_bdf(id) || is_sf_name(id)
}

/// What the doctor reads about its own process and namespaces, once.
pub(crate) struct Pod {
    /// `self/mountinfo`, or why it could not be read.
    pub mounts: Result<Vec<Mount>, String>,
    /// `net/dev`: the netdevs of this network namespace.
    pub netdevs: Result<Vec<NetDevCounters>, String>,
    /// `CapEff` of `self/status`.
    pub cap_eff: Option<u64>,
    /// `sys/kernel/cap_last_cap` (40 when unreadable).
    pub cap_last: u32,
    /// Soft `Max locked memory` of `self/limits`.
    pub memlock: Option<Limit>,
}

impl Pod {
    fn read(input: &Input) -> Self {
        let proc = &input.paths.proc_root;
        let text = |rel: &str| {
            let p = proc.join(rel);
            fs::read_to_string(&p).map_err(|e| format!("{}: {e}", p.display()))
        };
        Pod {
            mounts: text("self/mountinfo").map(|t| procfs::parse_mountinfo(&t)),
            netdevs: text("net/dev").map(|t| procfs::parse_net_dev(&t)),
            cap_eff: text("self/status")
                .ok()
                .and_then(|t| procfs::parse_cap_eff(&t)),
            cap_last: text("sys/kernel/cap_last_cap")
                .ok()
                .and_then(|t| t.trim().parse().ok())
                .unwrap_or(40),
            memlock: text("self/limits")
                .ok()
                .and_then(|t| procfs::parse_memlock(&t)),
        }
    }

    /// Whether `name` is a netdev of this network namespace (`None`: unknown).
    pub fn has_netdev(&self, name: &str) -> Option<bool> {
        self.netdevs
            .as_ref()
            .ok()
            .map(|l| l.iter().any(|n| n.name == name))
    }
}

/// Run every check.
pub fn run(input: &Input) -> Report {
    let functions = allocated(input);
    let pod = Pod::read(input);
    let mut checks = Vec::new();
    if functions.is_empty() {
        checks.push(Check::fail(
            CheckId::Allocation,
            None,
            "no allocated functions: no PCIDEVICE_* variable and no --device".into(),
            "request the device plugin's resource in the container's resources.limits \
             (e.g. nvidia.com/cx6dx_vf: 1), or name functions with --device BDF"
                .into(),
        ));
    } else {
        let ids: Vec<&str> = functions.iter().map(|f| f.id.as_str()).collect();
        checks.push(Check::pass(
            CheckId::Allocation,
            None,
            format!("{} function(s): {}", ids.len(), ids.join(", ")),
        ));
    }
    checks.push(host_sysfs::check(input, &pod));
    for f in &functions {
        checks.extend(function::checks(input, &pod, f));
    }
    checks.push(checks::iova(input, &functions));
    checks.push(checks::hugepages(input, &pod));
    checks.push(checks::memlock(&pod));
    checks.push(checks::net_raw(&pod));
    checks.push(checks::sys_admin(&pod));

    let mut counts = Counts::default();
    for c in &checks {
        match c.status {
            Status::Pass => counts.pass += 1,
            Status::Warn => counts.warn += 1,
            Status::Fail => counts.fail += 1,
        }
    }
    Report {
        ok: counts.fail == 0,
        functions,
        checks,
        counts,
    }
}
