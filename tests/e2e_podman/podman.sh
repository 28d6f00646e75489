#!/bin/sh
# Runs `podman "$@"` for nicplug's CDI end-to-end test (tests/e2e_podman/main.rs). Started by
# the test inside `unshare -m --propagation private`, so every mount below is private to it and
# vanishes with it:
#   - a tmpfs on /run: podman's and crun's state, and /run/cdi (= /var/run/cdi, a directory
#     podman 4.3 always reads; it has no --cdi-spec-dir) bound to the test's spec directory;
#   - crun refuses cgroup "hybrid" mode, so where cgroup v2 holds only hugetlb, hugetlb is
#     mounted as a v1 hierarchy for the run, and put back afterwards (podman's leftover empty
#     cgroups removed first, else the kernel keeps hugetlb away from cgroup v2).
# (cgroupfs files report size 0: read them, never test them with -s.)
# Usage: podman.sh CDI_DIR PODMAN_ARGS...
set -eu
cdi_dir=$1
shift

# One at a time on this machine (any test process): each run moves hugetlb between cgroup
# hierarchies, which is global kernel state.
exec 9>/tmp/nicplug-e2e-podman.lock
flock 9

mount -t tmpfs -o mode=755 tmpfs /run
mkdir /run/cdi
mount --bind "$cdi_dir" /run/cdi

hugetlb=/sys/fs/cgroup/hugetlb
made_dir=
mounted=
v2=/sys/fs/cgroup/unified/cgroup.controllers
hugetlb_cgroups() { awk '$1 == "hugetlb" { print $3 }' /proc/cgroups; }
release() {
  if [ -d "$hugetlb/libpod_parent" ]; then
    find "$hugetlb/libpod_parent" -depth -type d -exec rmdir {} \; 2>/dev/null || true
  fi
  # Removed cgroups die asynchronously; the kernel destroys a v1 hierarchy (handing hugetlb
  # back to v2) only when it is unmounted without children.
  i=0
  while [ "$(hugetlb_cgroups)" != 1 ] && [ $i -lt 100 ]; do sleep 0.05; i=$((i + 1)); done
  umount "$hugetlb" || true
  i=0
  while [ -z "$(cat "$v2")" ] && [ $i -lt 40 ]; do sleep 0.05; i=$((i + 1)); done
  [ -n "$(cat "$v2")" ]
}
cleanup() {
  if [ -n "$mounted" ]; then
    tries=1
    until release; do
      if [ $tries -ge 5 ]; then
        echo "podman.sh: hugetlb did not return to cgroup v2" >&2
        break
      fi
      tries=$((tries + 1))
      mount -t cgroup -o hugetlb cgroup "$hugetlb" || break
    done
  fi
  if [ -n "$made_dir" ]; then rmdir "$hugetlb" || true; fi
}
trap cleanup EXIT

# hugetlb is on cgroup v2 (or in a v1 hierarchy a previous run left dying): mount it as v1.
controllers=$(cat "$v2" 2>/dev/null || true)
if [ -n "$controllers" ] && [ "$controllers" != hugetlb ]; then
  echo "podman.sh: cgroup v2 holds '$controllers'; crun refuses hybrid mode" >&2
  exit 97
fi
if [ -e "$v2" ] && ! grep -q ' - cgroup cgroup .*hugetlb' /proc/self/mountinfo &&
  awk '$1 == "hugetlb" && $4 == 1 { found = 1 } END { exit !found }' /proc/cgroups; then
  if [ ! -d "$hugetlb" ]; then mkdir "$hugetlb"; made_dir=1; fi
  mount -t cgroup -o hugetlb cgroup "$hugetlb"
  mounted=1
fi

set +e
podman "$@"
rc=$?
set -e
exit $rc
