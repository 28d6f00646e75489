#!/usr/bin/env bash
# Runs every test nicplug has, on a bare Debian 12 machine: installs what the tests need
# (system packages, Python packages), then format, lint and the whole test suite.
set -euo pipefail
cd "$(dirname "$0")/.."

# Real third-party programs the tests use as oracles.
debs=(ibverbs-utils ibverbs-providers util-linux iproute2 python3-venv podman crun
      containerd runc busybox-static dpdk-dev prometheus buildah)
missing=()
for p in "${debs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "installing: ${missing[*]}"
  if [ "$(id -u)" -ne 0 ]; then SUDO=sudo; else SUDO=; fi
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

cargo fmt --all -- --check
cargo clippy --all-targets --locked -- -D warnings
cargo test --locked

# End-to-end tests of `nicplug serve`: Python grpcio (an HTTP/2 + gRPC stack independent of
# tonic) plays kubelet against the real binary over real Unix sockets (tests/serve/).
cargo build --locked
venv=target/venv
[ -x "$venv/bin/python" ] || python3 -m venv "$venv"
if ! "$venv/bin/python" -c 'import grpc, grpc_tools, pytest, kubernetes_validate, yaml, prometheus_client, celpy' 2>/dev/null; then
  "$venv/bin/python" -m pip install -q grpcio grpcio-tools pytest kubernetes-validate pyyaml prometheus-client cel-python
fi

# deploy/ manifests against the Kubernetes schemas, offline (kubernetes-validate ships them).
PYTHONDONTWRITEBYTECODE=1 "$venv/bin/python" -m pytest -q -p no:cacheprovider tests/deploy

NICPLUG_BIN="$PWD/target/debug/nicplug" PYTHONDONTWRITEBYTECODE=1 \
  "$venv/bin/python" -m pytest -q tests/serve

# The DRA driver's kubelet side (tests/dra/): the grpcio stand-in as kubelet's plugin watcher
# and DRA manager, with every `:authority` form, against the real `nicplug dra`.
NICPLUG_BIN="$PWD/target/debug/nicplug" PYTHONDONTWRITEBYTECODE=1 \
  "$venv/bin/python" -m pytest -q tests/dra

# DRA, the API-server side (tests/dra_api/): `nicplug dra` against a stand-in API server that
# validates every body against the 1.34 schema; DeviceClass selectors run by cel-python.
NICPLUG_BIN="$PWD/target/debug/nicplug" PYTHONDONTWRITEBYTECODE=1 \
  "$venv/bin/python" -m pytest -q -s tests/dra_api

# The container image (scripts/image.sh): from scratch, offline, the release binary plus the
# shared objects it loads; run with podman (--version, discover on the sample node); its size
# printed. tests/e2e/test_daemonset.py runs it as the DaemonSets do.
cargo build --release --locked
./scripts/image.sh

# The README's first command, as written (a second binary once made `cargo run` ask which).
demo_log=$(mktemp)
if ! cargo run --release --locked -q -- demo >"$demo_log" 2>&1; then
  cat "$demo_log"; echo "the README's 'cargo run --release -- demo' failed" >&2; exit 1
fi
tail -n 3 "$demo_log"; rm -f "$demo_log"

# In a real container (tests/e2e/): a real containerd 1.6 (CRI plugin, runc) on a temp socket
# with images built from busybox-static, the real `nicplug serve` registered by the grpcio
# kubelet stand-in; Allocate mapped to CRI as kubelet does, pods probed from inside; real
# libibverbs (ibv_devices) and DPDK (dpdk-testpmd) as oracles in the pod's view. Needs root
# (skipped with the reason otherwise).
NICPLUG_BIN="$PWD/target/debug/nicplug" PYTHONDONTWRITEBYTECODE=1 \
  "$venv/bin/python" -m pytest -q -s tests/e2e
