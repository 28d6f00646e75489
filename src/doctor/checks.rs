//! Pod-wide checks: IOVA mode, hugepages, locked memory, capabilities.

use super::procfs::{self, CAP_IPC_LOCK, CAP_NET_RAW, CAP_SYS_ADMIN, Limit, Mount, Pagemap};
use super::{Allocated, Check, CheckId, Input, Pod};
use crate::host::layout;
use std::fs;
use std::path::Path;

/// Below this RLIMIT_MEMLOCK, without CAP_IPC_LOCK, memory registration of any realistic DPDK
/// memory (mempools on hugepages) fails.
const MEMLOCK_MIN: u64 = 1 << 30;

/// Drivers whose devices make EAL vote for physical addresses.
const PA_DRIVERS: [&str; 2] = ["igb_uio", "uio_pci_generic"];

pub(super) fn list(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(dir)
        .map(|rd| {
            rd.filter_map(|e| e.ok()?.file_name().into_string().ok())
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

fn page_size(proc: &Path) -> u64 {
    fs::read(proc.join("self/auxv"))
        .ok()
        .and_then(|b| procfs::parse_auxv_page_size(&b))
        .filter(|s| s.is_power_of_two())
        .unwrap_or(4096)
}

fn probe_pagemap(input: &Input) -> Pagemap {
    let proc = &input.paths.proc_root;
    let ps = page_size(proc);
    let file = proc.join("self/pagemap");
    match input.pagemap_addr {
        Some(addr) => procfs::read_pagemap(&file, addr, ps),
        None => {
            // A page of our own, written so that it is resident.
            let buf = std::hint::black_box(vec![0x5au8; 2 * ps as usize]);
            let addr = (buf.as_ptr() as u64).next_multiple_of(ps);
            let r = procfs::read_pagemap(&file, addr, ps);
            drop(buf);
            r
        }
    }
}

/// Check 3: EAL can run with IOVA as VA; nothing forces physical addresses.
pub(super) fn iova(input: &Input, functions: &[Allocated]) -> Check {
    let sysfs = input.paths.sysfs();
    let noiommu = layout::read_attr(&sysfs.at(layout::NOIOMMU_MODE))
        .is_ok_and(|s| layout::parse_flag(&s) == Some(true));
    let devices = sysfs.at(layout::PCI_DEVICES);
    let voters: Vec<String> = list(&devices)
        .into_iter()
        .filter(|d| !functions.iter().any(|f| &f.id == d))
        .filter_map(|d| {
            let drv = fs::read_link(devices.join(&d).join("driver")).ok()?;
            let drv = drv.file_name()?.to_str()?.to_string();
            (PA_DRIVERS.contains(&drv.as_str()) || (noiommu && drv == "vfio-pci")).then(|| {
                format!(
                    "{d} ({drv}{})",
                    if drv == "vfio-pci" { ", no-IOMMU" } else { "" }
                )
            })
        })
        .collect();
    let eal_va = input
        .env
        .iter()
        .any(|(k, v)| k.starts_with("NICPLUG_EAL_ARGS_") && v.contains("--iova-mode=va"));
    let hint = if eal_va {
        " ($NICPLUG_EAL_ARGS_* carries it: use it in the command)"
    } else {
        " (`nicplug doctor --eal-args` prints it with the allow-list)"
    };
    match probe_pagemap(input) {
        Pagemap::Readable => Check::warn(
            CheckId::Iova,
            None,
            "physical addresses are readable (/proc/self/pagemap gives PFNs: CAP_SYS_ADMIN): EAL \
             may choose IOVA as PA, which mlx5 does not need"
                .into(),
            format!("drop CAP_SYS_ADMIN (see sys-admin) and run EAL with --iova-mode=va{hint}"),
        )
        .field(3),
        state if !voters.is_empty() => Check::fail(
            CheckId::Iova,
            None,
            format!(
                "physical addresses unreadable ({}) and {} would vote for IOVA as PA: EAL without \
                 an allow-list and --iova-mode=va fails to start",
                pagemap_text(&state),
                voters.join(", ")
            ),
            format!("run EAL with -a <allocated function> ... --iova-mode=va{hint}"),
        )
        .field(3),
        state => Check::pass(
            CheckId::Iova,
            None,
            format!(
                "physical addresses unreadable ({}) and no device votes PA: EAL (DPDK >= 19.08) \
                 picks IOVA as VA; --iova-mode=va makes it explicit{}",
                pagemap_text(&state),
                if eal_va {
                    ", as $NICPLUG_EAL_ARGS_* does"
                } else {
                    ""
                }
            ),
        ),
    }
}

fn pagemap_text(p: &Pagemap) -> String {
    match p {
        Pagemap::Readable => "PFNs readable".into(),
        Pagemap::Zeroed => "pagemap PFNs are zero".into(),
        Pagemap::NotPresent => "pagemap shows no resident page".into(),
        Pagemap::Unreadable(e) => format!("pagemap unreadable: {e}"),
    }
}

/// Hugepages: a writable hugetlbfs mount, and free pages of some size.
pub(super) fn hugepages(input: &Input, pod: &Pod) -> Check {
    let no_mount_fix = "mount an emptyDir with medium: HugePages (or HugePages-2Mi) at \
        /dev/hugepages and request hugepages-2Mi (or hugepages-1Gi) in resources.limits, with \
        memory; or run EAL with --in-memory";
    let mounts = match &pod.mounts {
        Ok(m) => m,
        Err(e) => {
            return Check::warn(
                CheckId::Hugepages,
                None,
                format!("cannot read mountinfo: {e}"),
                "mount procfs at /proc".into(),
            );
        }
    };
    let huge: Vec<&Mount> = mounts.iter().filter(|m| m.fs_type == "hugetlbfs").collect();
    if huge.is_empty() {
        return Check::fail(
            CheckId::Hugepages,
            None,
            "no hugetlbfs mount in this container".into(),
            no_mount_fix.into(),
        );
    }
    let writable: Vec<&&Mount> = huge.iter().filter(|m| !m.read_only()).collect();
    let Some(mount) = writable.first() else {
        return Check::fail(
            CheckId::Hugepages,
            None,
            format!("hugetlbfs mounted read-only at {}", huge[0].mount_point),
            no_mount_fix.into(),
        );
    };
    let pagesize = mount
        .super_options
        .split(',')
        .find_map(|o| o.strip_prefix("pagesize="))
        .map(|s| format!(" (pagesize={s})"))
        .unwrap_or_default();
    let where_ = format!("hugetlbfs at {}{pagesize}", mount.mount_point);

    let hp = input.paths.sysfs().at(layout::HUGEPAGES);
    let mut sizes: Vec<(String, u64)> = list(&hp)
        .into_iter()
        .filter_map(|d| {
            let free = layout::read_counter(&hp.join(&d).join("free_hugepages"))?;
            Some((d.trim_start_matches("hugepages-").to_string(), free))
        })
        .collect();
    if sizes.is_empty()
        && let Ok(t) = fs::read_to_string(input.paths.proc_root.join("meminfo"))
    {
        let mi = procfs::parse_meminfo(&t);
        if let (Some(free), Some(size)) = (mi.get("HugePages_Free"), mi.get("Hugepagesize")) {
            sizes.push((format!("{size}kB"), *free));
        }
    }
    let listing = sizes
        .iter()
        .map(|(s, n)| format!("{n} free {s}"))
        .collect::<Vec<_>>()
        .join(", ");
    if sizes.is_empty() {
        return Check::warn(
            CheckId::Hugepages,
            None,
            format!("{where_}; free hugepages unknown (no sysfs kernel/mm/hugepages, no meminfo)"),
            "check the node reserves hugepages (vm.nr_hugepages or hugepages= on the kernel \
             command line)"
                .into(),
        );
    }
    if sizes.iter().all(|(_, n)| *n == 0) {
        return Check::fail(
            CheckId::Hugepages,
            None,
            format!("{where_}, but no free hugepages ({listing})"),
            "reserve hugepages on the node (vm.nr_hugepages, or hugepages= on the kernel \
             command line) and request hugepages-2Mi (or -1Gi) in the container's \
             resources.limits"
                .into(),
        );
    }
    Check::pass(
        CheckId::Hugepages,
        None,
        format!("{where_}; node-wide {listing}"),
    )
}

fn caps_unknown(check: CheckId) -> Check {
    Check::warn(
        check,
        None,
        "cannot read CapEff from /proc/self/status".into(),
        "mount procfs at /proc (the runtime does by default)".into(),
    )
}

/// RLIMIT_MEMLOCK vs CAP_IPC_LOCK: memory registration pins DPDK's whole memory.
pub(super) fn memlock(pod: &Pod) -> Check {
    let Some(caps) = pod.cap_eff else {
        return caps_unknown(CheckId::Memlock);
    };
    let limit = pod.memlock.map_or("unknown".to_string(), |l| l.to_string());
    if procfs::has_cap(caps, CAP_IPC_LOCK) {
        return Check::pass(
            CheckId::Memlock,
            None,
            format!("CAP_IPC_LOCK: memory registration is not bound by RLIMIT_MEMLOCK ({limit})"),
        );
    }
    let fix = "add IPC_LOCK to the container's securityContext.capabilities.add (or raise the \
        runtime's default RLIMIT_MEMLOCK to unlimited)";
    match pod.memlock {
        Some(Limit::Unlimited) => Check::pass(
            CheckId::Memlock,
            None,
            "RLIMIT_MEMLOCK unlimited (no CAP_IPC_LOCK needed)".into(),
        ),
        Some(Limit::Bytes(b)) if b >= MEMLOCK_MIN => Check::warn(
            CheckId::Memlock,
            None,
            format!(
                "no CAP_IPC_LOCK; RLIMIT_MEMLOCK {limit}: enough only while DPDK's memory stays \
                 below it"
            ),
            fix.into(),
        ),
        _ => Check::fail(
            CheckId::Memlock,
            None,
            format!(
                "no CAP_IPC_LOCK and RLIMIT_MEMLOCK {limit}: mlx5 memory registration (ibv_reg_mr) \
                 of DPDK's memory fails"
            ),
            fix.into(),
        ),
    }
}

pub(super) fn net_raw(pod: &Pod) -> Check {
    let Some(caps) = pod.cap_eff else {
        return caps_unknown(CheckId::NetRaw);
    };
    if procfs::has_cap(caps, CAP_NET_RAW) {
        Check::pass(CheckId::NetRaw, None, "CAP_NET_RAW present".into())
    } else {
        Check::fail(
            CheckId::NetRaw,
            None,
            "no CAP_NET_RAW: mlx5 cannot create raw packet queues (queue setup fails with \
             EPERM)"
                .into(),
            "add NET_RAW to the container's securityContext.capabilities.add".into(),
        )
    }
}

/// CAP_SYS_ADMIN and privileged mode: flagged, never required.
pub(super) fn sys_admin(pod: &Pod) -> Check {
    let Some(caps) = pod.cap_eff else {
        return caps_unknown(CheckId::SysAdmin);
    };
    let minimal = "NET_RAW and IPC_LOCK (NET_ADMIN only to change MTU/link/MAC/promiscuity, \
        SYS_RAWIO only for flow groups > 0)";
    let all = (0..=pod.cap_last.min(63)).all(|c| procfs::has_cap(caps, c));
    if all {
        return Check::warn(
            CheckId::SysAdmin,
            None,
            format!(
                "every capability (CapEff {caps:016x}): a privileged container, which DPDK on \
                 mlx5 does not need"
            ),
            format!("set privileged: false and add only {minimal}"),
        );
    }
    if procfs::has_cap(caps, CAP_SYS_ADMIN) {
        return Check::warn(
            CheckId::SysAdmin,
            None,
            "CAP_SYS_ADMIN present: not needed, and it makes physical addresses readable (EAL \
             may then choose IOVA as PA)"
                .into(),
            format!("remove SYS_ADMIN from capabilities.add; add only {minimal}"),
        );
    }
    Check::pass(
        CheckId::SysAdmin,
        None,
        "no CAP_SYS_ADMIN, not privileged".into(),
    )
}
