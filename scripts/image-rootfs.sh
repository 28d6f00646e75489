#!/bin/sh
# Lays out the root filesystem of nicplug's image in OUT: the binary at /usr/bin/nicplug and
# the DRA driver's nicplug-dra beside it (`nicplug dra` execs it; from BINARY's directory; debug
# info stripped) plus exactly the shared objects `ldd` says they load, the dynamic loader among
# them, each at the path the binary asks for. Nothing else: no shell, no libc tools.
# Used by scripts/image.sh (offline, from scratch) and by the Containerfile's final stage.
# Usage: image-rootfs.sh BINARY OUT
set -eu
bin=$1
out=$2
dra=$(dirname "$bin")/nicplug-dra
for b in "$bin" "$dra"; do
  [ -x "$b" ] || { echo "image-rootfs.sh: $b is not an executable" >&2; exit 1; }
done
rm -rf "$out"
mkdir -p "$out/usr/bin"
for pair in "$bin:nicplug" "$dra:nicplug-dra"; do
  src=${pair%:*}
  dst=$out/usr/bin/${pair##*:}
  if command -v strip >/dev/null 2>&1; then
    strip -o "$dst" "$src"
  else
    cp "$src" "$dst"
  fi
  chmod 0755 "$dst"
done

# `ldd` lines: "libc.so.6 => /lib/.../libc.so.6 (0x...)", "/lib64/ld-linux-x86-64.so.2 (0x...)",
# and the kernel's vDSO (no file). A static binary prints "not a dynamic executable".
libs=$(ldd "$bin" "$dra" 2>/dev/null | awk '$2 == "=>" && $3 ~ /^\// { print $3 } $1 ~ /^\// { print $1 }') || true
for lib in $libs; do
  mkdir -p "$out$(dirname "$lib")"
  cp -L "$lib" "$out$lib"
done

# Mount points the runtime fills (kubelet's host paths, /proc, /sys, /dev); an empty /tmp.
for d in dev proc sys tmp etc/pcidp var/lib/kubelet/device-plugins var/run/cdi \
  var/run/k8s.cni.cncf.io/devinfo/dp; do
  mkdir -p "$out/$d"
done
chmod 1777 "$out/tmp"
