#!/usr/bin/env bash
# One table of nicplug's costs on synthetic hosts of 128, 1,024 and 4,096 functions (or the
# PFSxVFS sizes given as arguments): discovery against the bare-read floor, and the daemon
# measured from an independent gRPC client (Python grpcio) over its Unix sockets in two layouts
# (one pool of every VF; a pool per PF), at `--log info`, with an ifb link for every netdev in
# its network namespace (see tests/serve/bench_serve.py).
#   ./scripts/bench.sh                 # 4x31 8x127 32x127
#   ./scripts/bench.sh 8x127           # one size
# Needs the test command's venv (./scripts/test.sh makes it) and, for the netdevs, root.
set -euo pipefail
cd "$(dirname "$0")/.."
sizes=("$@")
[ ${#sizes[@]} -gt 0 ] || sizes=(4x31 8x127 32x127)

cargo build --release --locked -q
venv=target/venv
if ! "$venv/bin/python" -c 'import grpc, grpc_tools' 2>/dev/null; then
  [ -x "$venv/bin/python" ] || python3 -m venv "$venv"
  "$venv/bin/pip" install -q grpcio grpcio-tools
fi
out=target/bench
mkdir -p "$out"
for s in "${sizes[@]}"; do
  echo "== $s" >&2
  # A criterion filter matching nothing: only the median/p99 pass runs (BENCH line).
  NICPLUG_BENCH_VFS="$s" cargo bench --locked -q --bench core -- only-percentiles 2>/dev/null \
    | sed -n 's/^BENCH //p' > "$out/core-$s.json"
  NICPLUG_BIN="$PWD/target/release/nicplug" "$venv/bin/python" tests/serve/bench_serve.py \
    --vfs "$s" --json "$out/serve-$s.json" >&2
done

"$venv/bin/python" - "$out" "${sizes[@]}" <<'PY'
import json, sys
from pathlib import Path
out, sizes = Path(sys.argv[1]), sys.argv[2:]
LAYOUTS = ("one-pool", "per-pf")


def both(fmt, key):
    """One cell, `one pool / per-PF pools`."""
    def cell(c, s):
        vals = [s["layouts"][l].get(key) for l in LAYOUTS if l in s["layouts"]]
        return " / ".join("n/a" if v is None else fmt(v) for v in vals)
    return cell


mib = lambda v: f"{int(v.split()[0]) / 1024:.1f}"
rows = [
    ("functions", lambda c, s: f"{c['functions']:,}"),
    ("discovery p50 / p99 (ms)", lambda c, s: f"{c['discover_p50_ms']:.1f} / {c['discover_p99_ms']:.1f}"),
    ("bare-read floor, one thread, p50 / p99 (ms)", lambda c, s: f"{c['floor_p50_ms']:.1f} / {c['floor_p99_ms']:.1f}"),
    ("discovery / floor (p50)", lambda c, s: f"{c['discover_p50_ms'] / c['floor_p50_ms']:.2f}"),
    ("one VF removed, applied incrementally p50 / p99 (ms)", lambda c, s: f"{c['refresh_p50_ms']:.2f} / {c['refresh_p99_ms']:.2f}"),
    ("**daemon, one pool / a pool per PF:**", lambda c, s: ""),
    ("start -> every pool registered (ms)", both(lambda v: f"{v:.1f}", "start_to_registered_ms")),
    ("daemon peak RSS (MiB)", both(mib, "VmHWM")),
    ("bytes per function above the floor", both(lambda v: f"{v:,.0f}", "bytes_per_function")),
    ("VF removed -> ListAndWatch p50 (ms)", both(lambda v: f"{v:.1f}", "vf_removed_p50_ms")),
    ("Allocate p50 (ms)", both(lambda v: f"{v:.3f}", "alloc_p50_ms")),
    ("Allocate p99 (ms)", both(lambda v: f"{v:.3f}", "alloc_p99_ms")),
    ("no-op RPC p50 (ms)", both(lambda v: f"{v:.3f}", "noop_p50_ms")),
    ("Allocate / no-op (p50)", both(lambda v: f"{v:.2f}", "ratio_p50")),
    ("PF carrier lost/back -> ListAndWatch p50 (ms)", both(lambda v: f"{v:.1f}", "link_change_p50_ms")),
    ("kubelet restart -> registered p50 (ms)", both(lambda v: f"{v:.1f}", "restart_to_registered_p50_ms")),
    ("daemon CPU per 1,000 Allocates (ms)", both(lambda v: f"{v:.0f}", "cpu_ms_per_1000_allocates")),
    ("netdevs in the daemon's namespace", lambda c, s: s["netdevs"]),
    ("floor: peak RSS on a 1x1 host (MiB)", lambda c, s: f"{s['floor_VmHWM_kB'] / 1024:.1f}"),
]
cols = [(json.loads((out / f"core-{z}.json").read_text()), json.loads((out / f"serve-{z}.json").read_text())) for z in sizes]
print("| measure | " + " | ".join(sizes) + " |")
print("|---|" + "---|" * len(sizes))
for name, f in rows:
    print(f"| {name} | " + " | ".join(f(c, s) for c, s in cols) + " |")
PY

# The DRA driver on the sample node: NodePrepareResources latency (grpcio kubelet stand-in, 200
# one-VF claims) and ResourceSlice publish latency after a VF appears (stand-in API server).
echo
echo "DRA driver (release build, sample node):"
NICPLUG_BIN="$PWD/target/release/nicplug" PYTHONDONTWRITEBYTECODE=1 \
  target/venv/bin/python tests/dra/bench_prepare.py 200
NICPLUG_BIN="$PWD/target/release/nicplug" PYTHONDONTWRITEBYTECODE=1 \
  target/venv/bin/python -m pytest -q -s -p no:cacheprovider \
  tests/dra_api/test_slices.py::test_republish_after_vf_appears 2>&1 | grep -i 'p50'
