"""Longest stall of a plugin socket under load (hand-run, prints figures; not part of pytest).

    NICPLUG_BIN=target/debug/nicplug target/venv/bin/python tests/serve/stall_bench.py [--vfs 8x127]

On a `--generated` host with every VF in one pool (`bench.example/vf`) and the PFs in another
(`bench.example/pf`), a grpcio client calls GetDevicePluginOptions on the PF pool's socket in a
loop; the slowest answer is printed for each load on the VF pool or the daemon: an 8,000-ID
GetPreferredAllocation, an Allocate of every VF, a YAML alias bomb reload, 1,500 idle metrics
connections.
"""

import argparse
import json
import socket
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import grpc  # noqa: E402

from harness import Daemon, Node, wait_for  # noqa: E402
from kubelet import Kubelet  # noqa: E402
from test_stalls import Prober, alias_bomb  # noqa: E402

VF_RES, PF_RES = "bench.example/vf", "bench.example/pf"


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--vfs", default="8x127")
    ap.add_argument("--node", help="an existing `sample write --generated` directory")
    args = ap.parse_args()
    if args.node:
        node = Node.__new__(Node)
        node.base = Path(args.node).parent
        node.root = Path(args.node)
        node.sys = node.root / "sys"
        node.kubelet_dir = Path(args.node + "-kubelet")
        node.plugin_dir = node.kubelet_dir / "device-plugins"
        node.plugin_dir.mkdir(parents=True, exist_ok=True)
        node.device_info_dir = Path(args.node + "-devinfo")
        node.device_info_dir.mkdir(exist_ok=True)
    else:
        node = Node.create(generated=args.vfs)
    node.config = node.root / "bench.yaml"
    node.config.write_text(json.dumps({"resourceList": [
        {"resourceName": "vf", "resourcePrefix": "bench.example",
         "selectors": {"vendors": ["15b3"], "devices": ["101e"]}},
        {"resourceName": "pf", "resourcePrefix": "bench.example",
         "selectors": {"vendors": ["15b3"], "devices": ["101d"]}}]}))
    port = None
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    kubelet = Kubelet(node.kubelet_dir)
    kubelet.start()
    d = Daemon(node, rescan_interval=60, log="warn",
               extra=["--metrics-addr", f"127.0.0.1:{port}"])
    d.start()
    try:
        kubelet.wait_all_registered([VF_RES, PF_RES], timeout=120)
        vfs = [x.id for x in kubelet.devices(VF_RES)]
        print(f"{len(vfs)} VFs in {VF_RES}")

        def measure(name, load):
            probe = Prober(node.plugin_dir / kubelet.conn(PF_RES).endpoint)
            t0 = time.monotonic()
            try:
                outcome = load()
            except grpc.RpcError as e:
                outcome = f"{e.code().name}: {e.details()[:80]}"
            took = time.monotonic() - t0
            time.sleep(0.2)
            probe.close()
            print(f"{name}: load took {took * 1000:.0f} ms ({outcome}); probe max "
                  f"{probe.worst() * 1000:.1f} ms over {len(probe.times)} calls")

        fake = [f"0000:{i // 256:02x}:{(i % 256) // 8:02x}.{i % 8}" for i in range(8000)]
        measure("GetPreferredAllocation 8,000 IDs",
                lambda: len(kubelet.preferred(VF_RES, [(fake, [], 8)], timeout=300)[0]))
        measure(f"GetPreferredAllocation {len(vfs)} IDs",
                lambda: len(kubelet.preferred(VF_RES, [(vfs, [], len(vfs))], timeout=300)[0]))
        measure(f"Allocate {len(vfs)} devices",
                lambda: len(kubelet.allocate(VF_RES, [vfs], timeout=300)[0]["devices"]))

        def bomb():
            before = len(d.stderr())
            node.write_config(alias_bomb())
            wait_for(lambda: "config" in d.stderr()[before:].lower(), 300, what="the bomb")
            return "judged"
        measure("alias bomb reload", bomb)

        def flood():
            conns = [socket.create_connection(("127.0.0.1", port)) for _ in range(1500)]
            time.sleep(1)
            for c in conns:
                c.close()
            return "1500 connections"
        measure("metrics connection flood", flood)
    finally:
        d.stop(timeout=10)
        kubelet.stop()


if __name__ == "__main__":
    main()
