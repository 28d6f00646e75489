"""Hand-run benchmark of `nicplug serve` on a big simulated host (not a test):

    target/venv/bin/python tests/serve/bench_serve.py [--vfs 8x127] [--calls 1000]

A `--generated 8x127` host (8 ConnectX-6 Dx PFs with 127 VFs each: 1,024 functions, ~110,000
files, materialised in /dev/shm) served as 8 pools, one per PF (`rootDevices`). Measures, in one
run against one daemon:
- start -> all pools registered (and first ListAndWatch message in);
- Allocate latency (one VF) against a no-op RPC (GetDevicePluginOptions) on the same channel,
  interleaved, p50/p99 and their ratio;
- fixture change -> ListAndWatch update: a VF's sysfs links removed (inotify), and, as root
  with `ip netns`, the first PF's carrier lost and back through rtnetlink (a veth named like
  its netdev, whose peer goes down and up): all 127 VFs Unhealthy, then Healthy;
- kubelet restart -> all pools registered again;
- daemon memory: VmHWM and VmRSS from /proc/PID/status.
"""

import argparse
import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from harness import Daemon, Netns, Node, netns_support, pb2, pb2_grpc  # noqa: E402
from kubelet import Kubelet, health_of, ids_of, plugin_channel  # noqa: E402


def pct(xs, p):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, max(0, int(round(p / 100 * len(xs))) - 1))]


def ms(x):
    return f"{x * 1000:.3f} ms"


def summary(name, xs):
    return (f"{name}: n={len(xs)} p50 {ms(pct(xs, 50))}  p99 {ms(pct(xs, 99))}  "
            f"min {ms(min(xs))}  max {ms(max(xs))}")


def pf_addresses(pfs):
    half = (pfs + 1) // 2  # as fixture::generated: the first ceil(pfs/2) PFs on NUMA 0
    return ([f"0000:{1 + j:02x}:00.0" for j in range(half)]
            + [f"0000:{0x81 + j:02x}:00.0" for j in range(pfs - half)])


def cpu_seconds(pid):
    """utime + stime of a process, in seconds."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def vf_address(pf, i):
    """VF i of a generated PF: routing ID PF + 1 + i on the PF's bus."""
    bus = pf.split(":")[1]
    rid = 1 + i
    return f"0000:{bus}:{rid >> 3:02x}.{rid & 7}"


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--vfs", default="8x127", help="PFSxVFS for `sample write --generated`")
    ap.add_argument("--calls", type=int, default=1000)
    ap.add_argument("--changes", type=int, default=10)
    ap.add_argument("--restarts", type=int, default=10)
    ap.add_argument("--json", help="also write the results to this file")
    args = ap.parse_args()
    pfs, vfs = map(int, args.vfs.split("x"))
    parent = "/dev/shm" if Path("/dev/shm").is_dir() else None

    t = time.monotonic()
    node = Node.create(parent=parent, generated=args.vfs)
    files = sum(1 for _ in node.root.rglob("*"))
    print(f"host: {pfs} PFs x {vfs} VFs = {pfs * (vfs + 1)} functions, {files} files in "
          f"{node.root} (written in {time.monotonic() - t:.2f} s)")

    pf_list = pf_addresses(pfs)
    resources = [f"bench.example/pf{k}" for k in range(pfs)]
    node.write_config({"resourceList": [
        {"resourceName": f"pf{k}", "resourcePrefix": "bench.example",
         "selectors": {"rootDevices": [pf]}}
        for k, pf in enumerate(pf_list)]})

    ns = None
    why = netns_support()
    link_name = "ens1f0"  # the first PF's netdev
    if why is None:
        ns = Netns()
        peer = ns.add_veth(link_name)
        print(f"rtnetlink: daemon in netns {ns.name} with a veth {link_name} (PF {pf_list[0]})")
    else:
        print(f"rtnetlink: skipped ({why})")

    kubelet = Kubelet(node.kubelet_dir)
    kubelet.start()
    # Full rescans every second (production: every 10 s): the peak RSS below then includes
    # the moment two host snapshots coexist, as it does on a node.
    daemon = Daemon(node, rescan_interval=1, log="warn", netns=ns.name if ns else None)
    results = {}
    try:
        # ---- start -> registered
        t0 = time.monotonic()
        daemon.start()
        regs = kubelet.wait_all_registered(resources, timeout=120)
        reg_t = max(r.t for r in regs.values()) - t0
        first_msg = max(r.conn.messages[0][0] for r in regs.values()) - t0
        n_devs = sum(len(kubelet.devices(r)) for r in resources)
        results["start_to_registered_ms"] = reg_t * 1000
        results["start_to_first_list_ms"] = first_msg * 1000
        print(f"start -> {pfs} pools registered: {ms(reg_t)}; -> every first ListAndWatch: "
              f"{ms(first_msg)} ({n_devs} devices advertised)")
        st = daemon.status()
        print(f"memory after start: VmHWM {st['VmHWM']}, VmRSS {st['VmRSS']}")

        # ---- Allocate vs no-op RPC, same server, same channel, interleaved
        pool = resources[1]
        healthy = [d.id for d in kubelet.devices(pool) if d.health == "Healthy"]
        channel = plugin_channel(kubelet.conn(pool).path)
        stub = pb2_grpc.DevicePluginStub(channel)
        empty = pb2.Empty()
        reqs = [pb2.AllocateRequest(container_requests=[
            pb2.ContainerAllocateRequest(devices_ids=[healthy[i % len(healthy)]])])
            for i in range(args.calls)]
        for i in range(50):  # warm-up
            stub.GetDevicePluginOptions(empty, timeout=10)
            stub.Allocate(reqs[i], timeout=10)
        noop, alloc = [], []
        for i in range(args.calls):
            a = time.perf_counter()
            stub.GetDevicePluginOptions(empty, timeout=10)
            b = time.perf_counter()
            stub.Allocate(reqs[i], timeout=10)
            c = time.perf_counter()
            noop.append(b - a)
            alloc.append(c - b)
        channel.close()
        print(summary("GetDevicePluginOptions (no-op)", noop))
        print(summary("Allocate (1 VF)              ", alloc))
        r50 = pct(alloc, 50) / pct(noop, 50)
        r99 = pct(alloc, 99) / pct(noop, 99)
        print(f"Allocate / no-op: p50 x{r50:.2f}, p99 x{r99:.2f}")
        results.update(noop_p50_ms=pct(noop, 50) * 1000, noop_p99_ms=pct(noop, 99) * 1000,
                       alloc_p50_ms=pct(alloc, 50) * 1000, alloc_p99_ms=pct(alloc, 99) * 1000,
                       ratio_p50=r50, ratio_p99=r99)

        # ---- daemon CPU time for 1,000 Allocates (user + system, from /proc/PID/stat)
        channel = plugin_channel(kubelet.conn(resources[1]).path)
        stub = pb2_grpc.DevicePluginStub(channel)
        before = cpu_seconds(daemon.pid)
        for i in range(1000):
            stub.Allocate(reqs[i % len(reqs)], timeout=10)
        cpu = cpu_seconds(daemon.pid) - before
        channel.close()
        print(f"daemon CPU time for 1,000 Allocates: {cpu * 1000:.0f} ms")
        results["cpu_ms_per_1000_allocates"] = cpu * 1000

        # ---- VF link removed -> ListAndWatch (inotify)
        pool = resources[2]
        lat = []
        for i in range(args.changes):
            vf = vf_address(pf_list[2], 10 + i)
            mark = kubelet.mark(pool)
            a = time.monotonic()
            node.remove_function(vf)
            t_msg, _ = kubelet.wait_devices(pool, lambda d, vf=vf: vf not in ids_of(d),
                                            timeout=10, after=mark)
            lat.append(t_msg - a)
        print(summary("VF removed -> ListAndWatch    ", lat))
        results["vf_removed_p50_ms"] = pct(lat, 50) * 1000

        # ---- rtnetlink: the PF's carrier lost and back -> ListAndWatch
        if ns is not None:
            pool = resources[0]
            lat = []
            for i in range(args.changes):
                for state, want in (("down", "Unhealthy"), ("up", "Healthy")):
                    mark = kubelet.mark(pool)
                    a = time.monotonic()
                    ns.set(peer, state)
                    t_msg, _ = kubelet.wait_devices(
                        pool, lambda d, w=want: set(health_of(d).values()) == {w}, timeout=10,
                        after=mark)
                    lat.append(t_msg - a)
            print(summary("PF carrier lost/back -> ListAndWatch", lat))
            results["link_change_p50_ms"] = pct(lat, 50) * 1000

        # ---- kubelet restart -> registered
        lat = []
        for _ in range(args.restarts):
            t0 = kubelet.restart()
            regs = kubelet.wait_all_registered(resources, timeout=30, after=t0)
            lat.append(max(r.t for r in regs.values()) - t0)
            time.sleep(0.5)
        print(summary(f"kubelet restart -> {pfs} pools registered", lat))
        results["restart_to_registered_p50_ms"] = pct(lat, 50) * 1000

        st = daemon.status()
        results.update(VmHWM=st["VmHWM"], VmRSS=st["VmRSS"])
        print(f"memory at the end ({pfs} pools, {n_devs} devices): VmHWM {st['VmHWM']}, "
              f"VmRSS {st['VmRSS']}")
        results["functions"] = pfs * (vfs + 1)
        print(json.dumps(results, indent=1, default=str))
        if args.json:
            Path(args.json).write_text(json.dumps(results, default=str))
    except BaseException:
        print(daemon.all_logs()[-5000:], file=sys.stderr)
        raise
    finally:
        code, clean = daemon.stop()
        if not clean or code != 0:
            print(f"daemon exit: {code} ({'clean' if clean else 'killed'})")
        kubelet.stop()
        if ns is not None:
            ns.delete()
        node.destroy()


if __name__ == "__main__":
    main()
