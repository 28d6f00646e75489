//! Core costs on a synthetic host (default 8 PFs x 127 VFs = 1,024 functions, all RDMA;
//! `NICPLUG_BENCH_VFS=PFSxVFS` for another size):
//! - `discover`: full discovery;
//! - `floor`: the same sysfs entries read by a bare loop (no parsing, no structure): the cost of
//!   the kernel interface itself, which discovery cannot beat;
//! - `allocate_one`: container edits for one VF;
//! - one VF removed, applied incrementally (that function re-read, pools rebuilt): p50/p99 only.
//!
//! Run: `cargo bench --bench core`. Criterion prints medians (and saves distributions under
//! target/criterion); the ratio discover/floor is the figure to watch.

use criterion::{Criterion, criterion_group, criterion_main};
use nicplug::{HostPaths, config, edits, fixture, host, pools};
use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};

/// What discovery touches per function, as a flat list: the floor replays it.
enum Op {
    Canon(PathBuf),
    Read(PathBuf),
    Link(PathBuf),
    List(PathBuf),
}

fn floor_ops(paths: &HostPaths) -> Vec<Op> {
    let root = fs::canonicalize(&paths.sysfs_root).unwrap();
    let mut ops = vec![Op::List(root.join("bus/pci/devices"))];
    let mut names: Vec<_> = fs::read_dir(root.join("bus/pci/devices"))
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    names.sort();
    for name in names {
        let link = root.join("bus/pci/devices").join(&name);
        let dir = fs::canonicalize(&link).unwrap();
        ops.push(Op::Canon(link));
        for f in [
            "class",
            "vendor",
            "device",
            "subsystem_vendor",
            "subsystem_device",
            "numa_node",
            "acpi_index",
            "sriov_totalvfs",
            "sriov_numvfs",
        ] {
            ops.push(Op::Read(dir.join(f)));
        }
        for l in ["iommu_group", "physfn", "driver"] {
            ops.push(Op::Link(dir.join(l)));
        }
        if dir.join("sriov_totalvfs").exists() {
            ops.push(Op::List(dir.clone()));
            for e in fs::read_dir(&dir).unwrap() {
                let n = e.unwrap().file_name().into_string().unwrap();
                if n.starts_with("virtfn") {
                    ops.push(Op::Link(dir.join(n)));
                }
            }
        }
        for sub in ["net", "infiniband", "infiniband_verbs", "infiniband_mad"] {
            ops.push(Op::List(dir.join(sub)));
        }
        for e in fs::read_dir(dir.join("net")).into_iter().flatten() {
            let d = e.unwrap().path();
            for f in ["type", "address", "operstate"] {
                ops.push(Op::Read(d.join(f)));
            }
        }
        for e in fs::read_dir(dir.join("infiniband_verbs"))
            .into_iter()
            .flatten()
        {
            let d = e.unwrap().path();
            ops.push(Op::Read(d.join("dev")));
            ops.push(Op::Read(d.join("ibdev")));
        }
        for e in fs::read_dir(dir.join("infiniband_mad"))
            .into_iter()
            .flatten()
        {
            ops.push(Op::Read(e.unwrap().path().join("dev")));
        }
        for e in fs::read_dir(dir.join("infiniband")).into_iter().flatten() {
            let ports = e.unwrap().path().join("ports");
            ops.push(Op::List(ports.clone()));
            for p in fs::read_dir(&ports).into_iter().flatten() {
                let p = p.unwrap().path();
                for f in ["state", "link_layer"] {
                    ops.push(Op::Read(p.join(f)));
                }
                ops.push(Op::Canon(p.join("hw_counters")));
                ops.push(Op::Canon(p.join("counters")));
            }
        }
    }
    ops
}

fn replay(ops: &[Op]) -> usize {
    let mut n = 0;
    let mut buf = String::new();
    for op in ops {
        n += match op {
            Op::Canon(p) => fs::metadata(p).is_ok() as usize,
            Op::Read(p) => fs::File::open(p)
                .and_then(|mut f| {
                    buf.clear();
                    f.read_to_string(&mut buf)
                })
                .unwrap_or(0),
            Op::Link(p) => fs::read_link(p).is_ok() as usize,
            Op::List(p) => fs::read_dir(p).map(|d| d.count()).unwrap_or(0),
        };
    }
    n
}

/// Median and p99 of discovery and of the floor, interleaved in one run so both see the same
/// machine (criterion reports means with confidence intervals, not tails).
fn percentiles(paths: &HostPaths, ops: &[Op], cfg: &config::Config) {
    const RUNS: usize = 100;
    let (mut d, mut f) = (Vec::with_capacity(RUNS), Vec::with_capacity(RUNS));
    for _ in 0..RUNS {
        let t = std::time::Instant::now();
        std::hint::black_box(host::discover(paths).unwrap());
        d.push(t.elapsed());
        let t = std::time::Instant::now();
        std::hint::black_box(replay(ops));
        f.push(t.elapsed());
    }
    let stat = |v: &mut Vec<std::time::Duration>| {
        v.sort();
        (v[v.len() / 2], v[v.len() * 99 / 100])
    };
    let ((dm, dp), (fm, fp)) = (stat(&mut d), stat(&mut f));
    let held = host::discover(paths).unwrap();
    let functions = held.functions.len();

    // One VF removed, applied as the daemon applies its event: that function (and its PF)
    // read again, then the pools rebuilt.
    let vf = held.functions.iter().rfind(|f| f.physfn.is_some()).unwrap();
    let link = paths.sysfs_root.join("bus/pci/devices").join(&vf.address);
    let target = fs::read_link(&link).unwrap();
    fs::remove_file(&link).unwrap();
    let scope = host::Scope::function(&vf.address);
    let mut r = Vec::with_capacity(RUNS);
    for _ in 0..RUNS {
        let t = std::time::Instant::now();
        let h = host::refresh(paths, &held, &scope).unwrap();
        std::hint::black_box(pools::build(&h, cfg, "intel.com"));
        r.push(t.elapsed());
    }
    std::os::unix::fs::symlink(target, &link).unwrap();
    let (rm, rp) = stat(&mut r);
    println!(
        "discovery of {functions} functions over {RUNS} runs: median {dm:.2?} p99 {dp:.2?}; \
         floor (same entries, bare loop, {} ops): median {fm:.2?} p99 {fp:.2?}; ratio {:.2}",
        ops.len(),
        dm.as_secs_f64() / fm.as_secs_f64()
    );
    println!("one VF removed, re-read and pools rebuilt: median {rm:.2?} p99 {rp:.2?}");
    // One line for scripts/bench.sh to collect.
    println!(
        "BENCH {{\"functions\":{functions},\"discover_p50_ms\":{},\"discover_p99_ms\":{},\
         \"floor_p50_ms\":{},\"floor_p99_ms\":{},\"refresh_p50_ms\":{},\"refresh_p99_ms\":{}}}",
        dm.as_secs_f64() * 1e3,
        dp.as_secs_f64() * 1e3,
        fm.as_secs_f64() * 1e3,
        fp.as_secs_f64() * 1e3,
        rm.as_secs_f64() * 1e3,
        rp.as_secs_f64() * 1e3
    );
}

/// The synthetic host: `NICPLUG_BENCH_VFS=PFSxVFS` (default 8x127, 1,024 functions).
fn host_shape() -> (u32, u32) {
    let spec = std::env::var("NICPLUG_BENCH_VFS").unwrap_or_else(|_| "8x127".into());
    let (p, v) = spec.split_once('x').expect("NICPLUG_BENCH_VFS is PFSxVFS");
    (p.parse().expect("PFS"), v.parse().expect("VFS"))
}

fn big_host(dir: &Path, (pfs, vfs): (u32, u32)) -> HostPaths {
    fixture::materialize(&fixture::generated(pfs, vfs), dir).expect("materialise")
}

fn benches(c: &mut Criterion) {
    let tmp = tempfile::tempdir_in("/dev/shm")
        .or_else(|_| tempfile::tempdir())
        .unwrap();
    let shape = host_shape();
    let paths = big_host(tmp.path(), shape);
    let host = host::discover(&paths).unwrap();
    assert_eq!(
        host.functions.len() as u32,
        shape.0 * (1 + shape.1),
        "synthetic host shape"
    );

    let ops = floor_ops(&paths);
    let cfg = config::parse_config(
        r#"{"resourceList":[{"resourceName":"vf","resourcePrefix":"nvidia.com",
            "selectors":{"vendors":["15b3"],"devices":["101e"],"isRdma":true}}]}"#,
        config::Format::Json,
    )
    .unwrap();
    percentiles(&paths, &ops, &cfg);
    let mut g = c.benchmark_group("discovery");
    g.sample_size(30);
    g.bench_function("discover", |b| b.iter(|| host::discover(&paths).unwrap()));
    g.bench_function("floor", |b| b.iter(|| replay(&ops)));
    g.finish();

    let pools = pools::build(&host, &cfg, "intel.com");
    let pool = &pools.pools[0];
    let ids = vec![pool.devices[pool.devices.len() / 2].id.clone()];
    c.bench_function("allocate_one", |b| {
        b.iter(|| edits::container_edits(pool, &host, &paths, &ids).unwrap())
    });
    c.bench_function("pools_build", |b| {
        b.iter(|| pools::build(&host, &cfg, "intel.com"))
    });
}

criterion_group!(core, benches);
criterion_main!(core);
