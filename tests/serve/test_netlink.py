"""Contract point 8: live link state through real rtnetlink.

The daemon runs inside a network namespace made by the test (`ip netns exec`) that holds links
named like the fixture's netdevs: a veth pair for a PF's uplink (bringing the peer down takes
its carrier), a `dummy` link (a veth end where the kernel has no dummy driver) for a VF's own
netdev. The rescan interval is 60 s and each wait 5 s: every change must come from rtnetlink
events, not from polling.

VF link states set through a PF (`ip link set <pf> vf N state disable`) need a real SR-IOV
device: veth carries no VF list. Their parsing and the policy on them are Rust tests
(`src/serve/watch.rs`, `tests/health.rs`).
"""

import statistics
import time

from harness import PF0_VFS, PF1_VFS, SAMPLE_POOLS, SAMPLE_VFS, VF_NETDEV, VF_POOL
from kubelet import health_of

VF = "0000:3b:00.5"  # ens1f0v3: sysfs says up, port ACTIVE


def test_pf_carrier_loss_makes_exactly_its_vfs_unhealthy(node, kubelet, daemons, netns):
    """The default rule: ens1f0 (a veth here) loses its carrier -> exactly its 8 VFs go
    Unhealthy in one ListAndWatch message; back -> all Healthy. A VF's own link going down or
    up in between never causes a message of its own. Prints event -> ListAndWatch latency."""
    ns = netns()
    peer = ns.add_veth("ens1f0")
    ns.add_link(VF_NETDEV[VF])  # created down: a free VF's netdev
    daemons.start(node, netns=ns.name, rescan_interval=60)
    kubelet.wait_all_registered(SAMPLE_POOLS, timeout=15)
    everything_healthy = {v: "Healthy" for v in SAMPLE_VFS}
    assert health_of(kubelet.devices(VF_POOL)) == everything_healthy, (
        f"{VF_NETDEV[VF]} is down: a VF's own link does not count")
    pf_down = {v: "Unhealthy" if v in PF0_VFS else "Healthy" for v in SAMPLE_VFS}
    assert sum(h == "Unhealthy" for h in pf_down.values()) == 8
    assert all(pf_down[v] == "Healthy" for v in PF1_VFS)

    lat = {"down": [], "up": []}
    for i in range(10):
        # The VF's own link flips first: it must not produce a message.
        ns.set(VF_NETDEV[VF], "up" if i % 2 == 0 else "down")
        for state, want in (("down", pf_down), ("up", everything_healthy)):
            mark = kubelet.mark(VF_POOL)
            before = time.monotonic()
            ns.set(peer, state)
            after = time.monotonic()
            t, devs = kubelet.wait_devices(
                VF_POOL, lambda d, w=want: health_of(d) == w, timeout=5, after=mark)
            first = mark[0].messages[mark[1]][1]
            assert health_of(first) == want, (
                f"iteration {i}, peer {state}: the first message after the change is not the "
                f"PF's: {health_of(first)}")
            lat[state].append(((t - after) * 1000, (t - before) * 1000))
    assert kubelet.conn(VF_POOL) is mark[0], "a link change must not re-register"

    def p50(xs):
        return statistics.median(xs)

    # (t - after, t - before): the change happens while `ip` runs, so the latency lies between.
    for state, xs in lat.items():
        early = sum(lo < 0 for lo, _ in xs)
        print(f"\nveth ens1f0 peer {state} -> ListAndWatch ({len(xs)} runs): p50 "
              f"{p50([hi for _, hi in xs]):.1f} ms from the start of `ip link set` (which itself "
              f"took p50 {p50([hi - lo for lo, hi in xs]):.1f} ms; the message came before it "
              f"returned in {early} runs); max {max(hi for _, hi in xs):.1f} ms")


def test_strict_link_down_up_via_rtnetlink(node, kubelet, daemons, netns):
    """`"nicplug": {"health": "strict"}`: the VF's own link counts, live."""
    ns = netns()
    kind = ns.add_link(VF_NETDEV[VF])
    ns.set(VF_NETDEV[VF], "up")
    daemons.start(node, config=node.rule_config("strict"), netns=ns.name, rescan_interval=60)
    kubelet.wait_all_registered(SAMPLE_POOLS, timeout=15)
    assert health_of(kubelet.devices(VF_POOL))[VF] == "Healthy", (
        f"{kind} link {VF_NETDEV[VF]} is up")

    latencies = []
    for _ in range(3):
        for state, want in (("down", "Unhealthy"), ("up", "Healthy")):
            mark = kubelet.mark(VF_POOL)
            t0 = time.monotonic()
            ns.set(VF_NETDEV[VF], state)
            t, devs = kubelet.wait_devices(
                VF_POOL, lambda d, w=want: health_of(d)[VF] == w, timeout=5, after=mark)
            latencies.append((state, (t - t0) * 1000))
            others = {i: h for i, h in health_of(devs).items() if i != VF}
            before = {i: h for i, h in health_of(mark[0].messages[0][1]).items() if i != VF}
            assert others == before, "other devices' health moved"
    assert kubelet.conn(VF_POOL) is mark[0], "a link change must not re-register"
    print(f"\n{kind} link {VF_NETDEV[VF]}: ip link set -> ListAndWatch: "
          + ", ".join(f"{s} {ms:.1f} ms" for s, ms in latencies))


def test_strict_rtnetlink_state_wins_at_start(node, kubelet, daemons, netns):
    ns = netns()
    ns.add_link(VF_NETDEV[VF])  # created down; sysfs operstate says "up"
    daemons.start(node, config=node.rule_config("strict"), netns=ns.name, rescan_interval=60)
    kubelet.wait_all_registered(SAMPLE_POOLS, timeout=15)
    assert health_of(kubelet.devices(VF_POOL))[VF] == "Unhealthy"
    mark = kubelet.mark(VF_POOL)
    ns.set(VF_NETDEV[VF], "up")
    kubelet.wait_devices(VF_POOL, lambda d: health_of(d)[VF] == "Healthy", timeout=5,
                         after=mark)


def test_strict_link_deleted_falls_back_to_sysfs(node, kubelet, daemons, netns):
    """A netdev that leaves the namespace (moved into a pod) is no longer an opinion:
    the sysfs state (up) applies again."""
    ns = netns()
    ns.add_link(VF_NETDEV[VF])
    daemons.start(node, config=node.rule_config("strict"), netns=ns.name, rescan_interval=60)
    kubelet.wait_all_registered(SAMPLE_POOLS, timeout=15)
    assert health_of(kubelet.devices(VF_POOL))[VF] == "Unhealthy"
    mark = kubelet.mark(VF_POOL)
    ns.ip("link", "del", VF_NETDEV[VF])
    kubelet.wait_devices(VF_POOL, lambda d: health_of(d)[VF] == "Healthy", timeout=5,
                         after=mark)


def test_pf_link_deleted_falls_back_to_sysfs(node, kubelet, daemons, netns):
    """The uplink's live state goes with its netdev: sysfs (carrier 1) applies again."""
    ns = netns()
    peer = ns.add_veth("ens1f1")
    ns.set(peer, "down")
    daemons.start(node, netns=ns.name, rescan_interval=60)
    kubelet.wait_all_registered(SAMPLE_POOLS, timeout=15)
    want = {v: "Unhealthy" if v in PF1_VFS else "Healthy" for v in SAMPLE_VFS}
    assert health_of(kubelet.devices(VF_POOL)) == want
    mark = kubelet.mark(VF_POOL)
    ns.ip("link", "del", "ens1f1")
    kubelet.wait_devices(VF_POOL, lambda d: set(health_of(d).values()) == {"Healthy"},
                         timeout=5, after=mark)
