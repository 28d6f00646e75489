#!/usr/bin/env bash
# Builds nicplug's container image offline, from scratch (no base image is pulled): the release
# binary and exactly the shared objects it loads (scripts/image-rootfs.sh), entrypoint
# /usr/bin/nicplug, tagged with the crate version and labelled with the OCI annotations. Then
# runs `nicplug --version` and `nicplug discover` on the bundled sample node in it with podman,
# and prints the image's size.
#
# Everything lives under target/image/ (its own container storage, never the machine's):
#   target/image/nicplug-<version>.oci.tar   the image as an OCI archive (what tests/e2e imports)
# Needs root, buildah, podman, unshare (scripts/test.sh installs them).
# Env: NICPLUG_IMAGE_BIN (default target/release/nicplug, built if missing),
#      NICPLUG_IMAGE_SOURCE (the org.opencontainers.image.source label; default: Cargo.toml's
#      `repository`, else the git remote `origin` if it is a URL, else "unknown").
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$PWD

version=$(sed -n 's/^version = "\(.*\)"$/\1/p' Cargo.toml | head -n1)
license=$(sed -n 's/^license = "\(.*\)"$/\1/p' Cargo.toml | head -n1)
source=${NICPLUG_IMAGE_SOURCE:-$(sed -n 's/^repository = "\(.*\)"$/\1/p' Cargo.toml | head -n1)}
if [ -z "$source" ]; then
  # A URL only: a clone of a local path has a path for its origin, which names nothing.
  source=$(git config --get remote.origin.url 2>/dev/null | grep -E "^(https?://|git@|ssh://)" || true)
  source=${source:-unknown}
fi
name=localhost/nicplug:$version

bin=${NICPLUG_IMAGE_BIN:-target/release/nicplug}
if [ ! -x "$bin" ] || [ ! -x "$(dirname "$bin")/nicplug-dra" ]; then
  cargo build --release --locked
fi

work=$repo/target/image
archive=$work/nicplug-$version.oci.tar
rm -rf "$work"
mkdir -p "$work"
store=(--root "$work/storage" --runroot "$work/runroot" --storage-driver vfs)

# 1. The root filesystem and the image.
sh scripts/image-rootfs.sh "$bin" "$work/rootfs"
ctr=$(buildah "${store[@]}" from --name nicplug-image-build scratch)
buildah "${store[@]}" copy --quiet "$ctr" "$work/rootfs/" / >/dev/null
buildah "${store[@]}" config \
  --entrypoint '["/usr/bin/nicplug"]' --cmd '' --env PATH=/usr/bin --workingdir / \
  --label "org.opencontainers.image.title=nicplug" \
  --label "org.opencontainers.image.version=$version" \
  --label "org.opencontainers.image.licenses=$license" \
  --label "org.opencontainers.image.source=$source" \
  --annotation "org.opencontainers.image.version=$version" \
  --annotation "org.opencontainers.image.licenses=$license" \
  --annotation "org.opencontainers.image.source=$source" \
  "$ctr"
buildah "${store[@]}" commit --quiet --format oci --rm "$ctr" "$name" >/dev/null
buildah "${store[@]}" push --quiet "$name" "oci-archive:$archive:$name"

# 2. Run it: --version, then discover on the sample node (written by the image's own binary).
cat >"$work/containers.conf" <<'CONF'
[containers]
default_ulimits = ["nofile=1024:1024", "nproc=1000:1000"]
[engine]
cgroup_manager = "cgroupfs"
events_logger = "file"
CONF
mkdir -p "$work/cdi" "$work/node"
run() {
  # tests/e2e_podman/podman.sh: podman in a private mount namespace (its /run, cgroup quirks).
  CONTAINERS_CONF=$work/containers.conf unshare -m --propagation private \
    sh tests/e2e_podman/podman.sh "$work/cdi" "${store[@]}" run --rm --network=none \
    --read-only --cap-drop=all --security-opt=no-new-privileges "$@"
}
echo "== nicplug --version in $name"
got=$(run "$name" --version)
echo "$got"
[ "$got" = "nicplug $version" ] || { echo "image.sh: expected 'nicplug $version'" >&2; exit 1; }

echo "== nicplug sample write /node, then nicplug discover on it, in $name"
run -v "$work/node:/node" "$name" sample write /node/sample >/dev/null
out=$(run -v "$work/node:/node:ro" "$name" --host-root /node/sample \
  --config /node/sample/config.json discover)
echo "$out"
for want in 0000:3b:00.2 mlx5_2 nvidia.com/cx6dx_vf; do
  grep -q "$want" <<<"$out" || { echo "image.sh: discover output lacks $want" >&2; exit 1; }
done

echo "== nicplug dra classes in $name (nicplug execs nicplug-dra beside it)"
out=$(run -v "$work/node:/node:ro" "$name" --config /node/sample/config.json dra classes)
grep -q "kind: DeviceClass" <<<"$out" || { echo "image.sh: dra classes printed no DeviceClass" >&2; exit 1; }
echo "$out" | head -n 4

# 3. What it is and how big.
size=$(podman "${store[@]}" image inspect --format '{{.Size}}' "$name")
labels=$(podman "${store[@]}" image inspect --format '{{json .Labels}}' "$name")
entry=$(podman "${store[@]}" image inspect --format '{{json .Config.Entrypoint}}' "$name")
echo "== image $name: $size bytes ($((size / 1024)) KiB) unpacked, archive $(stat -c %s "$archive") bytes"
echo "   entrypoint $entry, labels $labels"
echo "   files: $(cd "$work/rootfs" && find . -type f | sort | tr '\n' ' ')"
echo "   archive: $archive"
