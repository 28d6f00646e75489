"""Hand-run benchmark of `nicplug serve` on a big simulated host (not a test):

    target/venv/bin/python tests/serve/bench_serve.py [--vfs 8x127] [--layout per-pf] [--calls 1000]

A `--generated 8x127` host (8 ConnectX-6 Dx PFs with 127 VFs each: 1,024 functions, ~110,000
files, materialised in /dev/shm), served in the layouts real nodes have, each by its own daemon
(`--log info`, a full rescan every second):
- `one-pool`: one pool of every VF (vendor, device and driver selectors), the way the SR-IOV
  plugin is usually configured;
- `per-pf`: many small pools, one per PF (`rootDevices`).
As root, the daemon runs in a network namespace of its own holding an `ifb` link (`veth` where
the kernel has no ifb) for every function's netdev, named like it and up (the first PF's a veth),
as it would with host network on a real node. Measures, for each layout:
- start -> all pools registered (and first ListAndWatch message in);
- Allocate latency (one VF) against a no-op RPC (GetDevicePluginOptions) on the same channel,
  interleaved, p50/p99 and their ratio;
- fixture change -> ListAndWatch update: a VF's sysfs links removed (inotify), and, as root
  with `ip netns`, the first PF's carrier lost and back through rtnetlink (its netdev is a veth,
  whose peer goes down and up): all its VFs Unhealthy, then Healthy;
- kubelet restart -> all pools registered again;
- daemon memory: VmHWM and VmRSS from /proc/PID/status, and the same daemon's floor (a 1x1 host,
  one pool, no netdevs) to give the bytes each function costs.
"""

import argparse
import json
import os
import subprocess
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


def netdev_names(pfs, vfs):
    """The generated host's netdevs: PF k is `ens<k+1>f0`, its VF i `ens<k+1>f0v<i>`."""
    for k in range(pfs):
        yield f"ens{k + 1}f0"
        for i in range(vfs):
            yield f"ens{k + 1}f0v{i}"


def add_netdevs(ns, names):
    """Every name as an up link in `ns`, in two `ip -batch` runs: `ifb` where the kernel has it
    (one link each), else `veth` (each with a peer `p<name>`, up, so the carrier follows)."""
    names = list(names)
    probe = ns.ip("link", "add", names[0], "type", "ifb", check=False)
    kind = "ifb" if probe.returncode == 0 else "veth"
    if kind == "ifb":
        ns.ip("link", "del", names[0])
    adds, ups = [], []
    for n in names:
        if kind == "ifb":
            adds.append(f"link add {n} type ifb")
        else:
            peer = ("p" + n)[:15]
            adds.append(f"link add {n} type veth peer name {peer}")
            ups.append(f"link set {peer} up")
        ups.append(f"link set {n} up")
    for lines in (adds, ups):
        res = subprocess.run(["ip", "-n", ns.name, "-batch", "-"], input="\n".join(lines) + "\n",
                             capture_output=True, text=True, timeout=300)
        if res.returncode != 0:
            raise RuntimeError(f"ip -batch: {res.stderr.strip()[:2000]}")
    return kind


def layout_config(layout, pf_list):
    """(config, resource names) of a layout."""
    if layout == "one-pool":
        return ({"resourceList": [
            {"resourceName": "cx6dx_vf", "resourcePrefix": "bench.example",
             "selectors": {"vendors": ["15b3"], "devices": ["101e"], "drivers": ["mlx5_core"]}}]},
            ["bench.example/cx6dx_vf"])
    return ({"resourceList": [
        {"resourceName": f"pf{k}", "resourcePrefix": "bench.example",
         "selectors": {"rootDevices": [pf]}}
        for k, pf in enumerate(pf_list)]},
        [f"bench.example/pf{k}" for k in range(len(pf_list))])


def kib(status_value):
    """`12856 kB` -> 12856."""
    return int(status_value.split()[0])


def resident_by_mapping(pid):
    """Resident KiB of a process by what is mapped: its own binary, shared libraries, the main
    heap (`[heap]`), anonymous mappings (other malloc arenas, thread stacks, big blocks) and the
    rest, from /proc/PID/smaps."""
    groups = {}
    name = None
    exe = os.path.realpath(f"/proc/{pid}/exe")
    for line in Path(f"/proc/{pid}/smaps").read_text().splitlines():
        head = line.split()
        if head and "-" in head[0] and not head[0].endswith(":"):
            path = head[5] if len(head) > 5 else ""
            name = ("binary" if path == exe else "libraries" if path.startswith("/")
                    else "heap" if path == "[heap]" else "anonymous" if not path
                    else "stack" if path == "[stack]" else "other")
        elif head and head[0] == "Rss:":
            groups[name] = groups.get(name, 0) + int(head[1])
    return groups


def floor_rss(parent, log):
    """Peak RSS of the daemon serving a 1x1 host (one pool, two devices) through a few rescans:
    what the process costs before it holds any real host."""
    node = Node.create(parent=parent, generated="1x1")
    pf = pf_addresses(1)[0]
    node.write_config({"resourceList": [{"resourceName": "pf0", "resourcePrefix": "bench.example",
                                         "selectors": {"rootDevices": [pf]}}]})
    kubelet = Kubelet(node.kubelet_dir)
    kubelet.start()
    daemon = Daemon(node, rescan_interval=1, log=log)
    try:
        daemon.start()
        kubelet.wait_all_registered(["bench.example/pf0"], timeout=60)
        time.sleep(2.5)
        return kib(daemon.status()["VmHWM"])
    finally:
        daemon.stop()
        kubelet.stop()
        node.destroy()


def run_layout(args, node, layout, pf_list, ns, peer):
    """One daemon serving `node` in `layout`; returns its figures."""
    pfs, vfs = map(int, args.vfs.split("x"))
    config, resources = layout_config(layout, pf_list)
    node.write_config(config)
    kubelet = Kubelet(node.kubelet_dir)
    kubelet.start()
    # Full rescans every second (production: every 10 s): the peak RSS below then includes
    # the moment two host snapshots coexist, as it does on a node.
    daemon = Daemon(node, rescan_interval=1, log=args.log, netns=ns.name if ns else None)
    results = {"layout": layout, "pools": len(resources), "peak_after_kib": {}}

    def peak_after(phase):
        """VmHWM once a phase is done: which phase raised the peak."""
        results["peak_after_kib"][phase] = kib(daemon.status()["VmHWM"])
    print(f"---- layout {layout}: {len(resources)} pool(s), --log {args.log}")
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
        results["devices"] = n_devs
        print(f"start -> {len(resources)} pools registered: {ms(reg_t)}; -> every first "
              f"ListAndWatch: {ms(first_msg)} ({n_devs} devices advertised)")
        st = daemon.status()
        print(f"memory after start: VmHWM {st['VmHWM']}, VmRSS {st['VmRSS']}")
        peak_after("start")

        # ---- Allocate vs no-op RPC, same server, same channel, interleaved
        # Allocate the second PF's VFs only: a VF removed below must not be one kubelet holds
        # (those stay listed, Unhealthy, until released).
        pool = resources[1 % len(resources)]
        bus = pf_list[1 % len(pf_list)].split(":")[1]
        healthy = [d.id for d in kubelet.devices(pool)
                   if d.health == "Healthy" and d.id.split(":")[1] == bus]
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
        peak_after("allocate")
        r50 = pct(alloc, 50) / pct(noop, 50)
        r99 = pct(alloc, 99) / pct(noop, 99)
        print(f"Allocate / no-op: p50 x{r50:.2f}, p99 x{r99:.2f}")
        results.update(noop_p50_ms=pct(noop, 50) * 1000, noop_p99_ms=pct(noop, 99) * 1000,
                       alloc_p50_ms=pct(alloc, 50) * 1000, alloc_p99_ms=pct(alloc, 99) * 1000,
                       ratio_p50=r50, ratio_p99=r99)

        # ---- daemon CPU time for 1,000 Allocates (user + system, from /proc/PID/stat)
        channel = plugin_channel(kubelet.conn(pool).path)
        stub = pb2_grpc.DevicePluginStub(channel)
        before = cpu_seconds(daemon.pid)
        for i in range(1000):
            stub.Allocate(reqs[i % len(reqs)], timeout=10)
        cpu = cpu_seconds(daemon.pid) - before
        channel.close()
        print(f"daemon CPU time for 1,000 Allocates: {cpu * 1000:.0f} ms")
        peak_after("cpu_allocates")
        results["cpu_ms_per_1000_allocates"] = cpu * 1000

        # ---- VF link removed -> ListAndWatch (inotify); put back afterwards
        pool = resources[2 % len(resources)]
        pf = pf_list[2 % len(pf_list)]
        lat, removed = [], []
        for i in range(min(args.changes, vfs - 10)):
            vf = vf_address(pf, 10 + i)
            mark = kubelet.mark(pool)
            a = time.monotonic()
            removed.append((vf, node.remove_function(vf), 10 + i))
            t_msg, _ = kubelet.wait_devices(pool, lambda d, vf=vf: vf not in ids_of(d),
                                            timeout=10, after=mark)
            lat.append(t_msg - a)
        for vf, dev, index in removed:
            node.restore_function(vf, dev, index)
        if lat:
            print(summary("VF removed -> ListAndWatch    ", lat))
            peak_after("vf_removed")
            results["vf_removed_p50_ms"] = pct(lat, 50) * 1000

        # ---- rtnetlink: the first PF's carrier lost and back -> ListAndWatch
        if ns is not None:
            pool = resources[0]
            pf0_vfs = [vf_address(pf_list[0], i) for i in range(vfs)]
            lat = []
            for i in range(args.changes):
                for state, want in (("down", "Unhealthy"), ("up", "Healthy")):
                    mark = kubelet.mark(pool)
                    a = time.monotonic()
                    ns.set(peer, state)
                    t_msg, _ = kubelet.wait_devices(
                        pool, lambda d, w=want: all(health_of(d)[vf] == w for vf in pf0_vfs),
                        timeout=10, after=mark)
                    lat.append(t_msg - a)
            print(summary("PF carrier lost/back -> ListAndWatch", lat))
            peak_after("carrier")
            results["link_change_p50_ms"] = pct(lat, 50) * 1000

        # ---- kubelet restart -> registered
        lat = []
        for _ in range(args.restarts):
            t0 = kubelet.restart()
            regs = kubelet.wait_all_registered(resources, timeout=30, after=t0)
            lat.append(max(r.t for r in regs.values()) - t0)
            time.sleep(0.5)
        print(summary(f"kubelet restart -> {len(resources)} pools registered", lat))
        peak_after("kubelet_restarts")
        results["restart_to_registered_p50_ms"] = pct(lat, 50) * 1000

        st = daemon.status()
        results.update(VmHWM=st["VmHWM"], VmRSS=st["VmRSS"])
        print(f"memory at the end ({len(resources)} pools, {n_devs} devices): "
              f"VmHWM {st['VmHWM']}, VmRSS {st['VmRSS']}")
        parts = resident_by_mapping(daemon.pid)
        results["resident_kib"] = parts
        print("resident now (KiB): " + ", ".join(f"{k} {v}" for k, v in sorted(parts.items())))
        return results
    except BaseException:
        print(daemon.all_logs()[-5000:], file=sys.stderr)
        raise
    finally:
        code, clean = daemon.stop()
        if not clean or code != 0:
            print(f"daemon exit: {code} ({'clean' if clean else 'killed'})")
        kubelet.stop()
        # The next layout's daemon starts on a node where nothing is allocated: no record left
        # of devices handed out (the daemon's holders file, device-info files).
        (node.plugin_dir / "nicplug-holders.json").unlink(missing_ok=True)
        for f in node.device_info_dir.iterdir():
            f.unlink()


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--vfs", default="8x127", help="PFSxVFS for `sample write --generated`")
    ap.add_argument("--layout", action="append", choices=["one-pool", "per-pf"],
                    help="repeat for several (default: both)")
    ap.add_argument("--log", default="info", help="the daemon's --log")
    ap.add_argument("--calls", type=int, default=1000)
    ap.add_argument("--changes", type=int, default=10)
    ap.add_argument("--restarts", type=int, default=10)
    ap.add_argument("--json", help="also write the results to this file")
    args = ap.parse_args()
    layouts = args.layout or ["one-pool", "per-pf"]
    pfs, vfs = map(int, args.vfs.split("x"))
    functions = pfs * (vfs + 1)
    parent = "/dev/shm" if Path("/dev/shm").is_dir() else None

    floor = floor_rss(parent, args.log)
    print(f"floor: VmHWM {floor} kB (the daemon on a 1x1 host)")

    t = time.monotonic()
    node = Node.create(parent=parent, generated=args.vfs)
    files = sum(1 for _ in node.root.rglob("*"))
    print(f"host: {pfs} PFs x {vfs} VFs = {functions} functions, {files} files in "
          f"{node.root} (written in {time.monotonic() - t:.2f} s)")
    pf_list = pf_addresses(pfs)

    ns = peer = None
    why = netns_support()
    results = {"functions": functions, "floor_VmHWM_kB": floor, "layouts": {}}
    try:
        if why is None:
            ns = Netns()
            t = time.monotonic()
            # The first PF's netdev is a veth: its peer down takes the PF's carrier.
            peer = ns.add_veth("ens1f0")
            kind = add_netdevs(ns, [n for n in netdev_names(pfs, vfs) if n != "ens1f0"])
            results["netdevs"] = f"{functions - 1} {kind} + 1 veth"
            print(f"rtnetlink: daemon in netns {ns.name} with {functions - 1} {kind} links and "
                  f"a veth named like the netdevs, up (made in {time.monotonic() - t:.1f} s)")
        else:
            results["netdevs"] = "none"
            print(f"rtnetlink: skipped ({why})")
        for layout in layouts:
            r = run_layout(args, node, layout, pf_list, ns, peer)
            r["bytes_per_function"] = (kib(r["VmHWM"]) - floor) * 1024 / functions
            print(f"{layout}: {r['bytes_per_function']:.0f} bytes per function above the floor")
            results["layouts"][layout] = r
        print(json.dumps(results, indent=1, default=str))
        if args.json:
            Path(args.json).write_text(json.dumps(results, default=str))
    finally:
        if ns is not None:
            ns.delete()
        node.destroy()


if __name__ == "__main__":
    main()
