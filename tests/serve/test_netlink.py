"""Contract point 8: live link state through real rtnetlink wins over sysfs `operstate`.

The daemon runs inside a network namespace made by the test (`ip netns exec`) that holds a
link named like a VF's netdev (a `dummy` link; a veth end where the kernel has no dummy
driver). The rescan interval is 60 s and each wait 5 s: the change must come from rtnetlink
events, not from polling.
"""

import time

from harness import SAMPLE_POOLS, VF_NETDEV, VF_POOL
from kubelet import health_of

VF = "0000:3b:00.5"  # ens1f0v3: sysfs says up, port ACTIVE


def test_link_down_up_via_rtnetlink(node, kubelet, daemons, netns):
    ns = netns()
    kind = ns.add_link(VF_NETDEV[VF])
    ns.set(VF_NETDEV[VF], "up")
    daemons.start(node, netns=ns.name, rescan_interval=60)
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


def test_rtnetlink_state_wins_at_start(node, kubelet, daemons, netns):
    ns = netns()
    ns.add_link(VF_NETDEV[VF])  # created down; sysfs operstate says "up"
    daemons.start(node, netns=ns.name, rescan_interval=60)
    kubelet.wait_all_registered(SAMPLE_POOLS, timeout=15)
    assert health_of(kubelet.devices(VF_POOL))[VF] == "Unhealthy"
    mark = kubelet.mark(VF_POOL)
    ns.set(VF_NETDEV[VF], "up")
    kubelet.wait_devices(VF_POOL, lambda d: health_of(d)[VF] == "Healthy", timeout=5,
                         after=mark)


def test_link_deleted_falls_back_to_sysfs(node, kubelet, daemons, netns):
    """A netdev that leaves the namespace (moved into a pod) is no longer an opinion:
    the sysfs state (up) applies again."""
    ns = netns()
    ns.add_link(VF_NETDEV[VF])
    daemons.start(node, netns=ns.name, rescan_interval=60)
    kubelet.wait_all_registered(SAMPLE_POOLS, timeout=15)
    assert health_of(kubelet.devices(VF_POOL))[VF] == "Unhealthy"
    mark = kubelet.mark(VF_POOL)
    ns.ip("link", "del", VF_NETDEV[VF])
    kubelet.wait_devices(VF_POOL, lambda d: health_of(d)[VF] == "Healthy", timeout=5,
                         after=mark)
