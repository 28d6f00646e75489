"""Scalable functions and RDMA exclusive mode through the kubelet stand-in.

A VF whose RDMA device has moved into a pod (exclusive mode: no ibdev on the host, its uverbs
entry stays) must stay advertised with the same ID and health, also after the daemon is killed
and restarted, or kubelet loses its capacity and refuses restarting containers.
"""

import json

import pytest

from kubelet import Kubelet, health_of, ids_of

SPEC = """
rdma_netns_mode: exclusive
rdma_cm: {major: 10, minor: 56}
functions:
  - address: "0000:3b:00.0"
    bridge: "0000:3a:00.0"
    vendor: 15b3
    device: 101d
    driver: mlx5_core
    numa_node: 0
    netdev: {name: ens1f0}
    rdma: {ibdev: mlx5_0, uverbs: 0}
    sriov: {total_vfs: 4, num_vfs: 4}
    vf_template: {rdma: {first: 2}}
    vfs:
      1: {rdma_hidden: true}
  - address: "0000:af:00.0"
    bridge: "0000:ae:00.0"
    vendor: 15b3
    device: 101d
    driver: mlx5_core
    numa_node: 1
    netdev: {name: ens3f0}
    rdma: {ibdev: mlx5_18, uverbs: 18}
    sfs:
      - {sfnum: 88, index: 4, netdev: en3f0pf0sf88, rdma: {ibdev: mlx5_20, uverbs: 20}}
      - {sfnum: 89, index: 5, netdev: en3f0pf0sf89, rdma: {ibdev: mlx5_21, uverbs: 21}}
      - {sfnum: 90, index: 6, lightweight: true}
"""

CONFIG = {
    "resourceList": [
        {"resourceName": "vf", "resourcePrefix": "nvidia.com",
         "selectors": {"vendors": ["15b3"], "devices": ["101e"], "isRdma": True}},
        {"resourceName": "sf", "resourcePrefix": "nvidia.com", "deviceType": "auxNetDevice",
         "selectors": [{"auxTypes": ["sf"], "pfNames": ["ens3f0#88-90"], "isRdma": True}]},
    ]
}
VFS = ["0000:3b:00.2", "0000:3b:00.3", "0000:3b:00.4", "0000:3b:00.5"]
IN_POD = "0000:3b:00.3"
SFS = ["mlx5_core.sf.4", "mlx5_core.sf.5"]


@pytest.fixture
def estate(make_node):
    node = make_node(spec=SPEC)
    node.write_config(CONFIG)
    k = Kubelet(node.kubelet_dir)
    k.start()
    yield node, k
    k.stop()


def test_in_pod_vf_and_sfs_are_advertised_and_survive_a_daemon_kill(estate, daemons):
    node, k = estate
    d = daemons.start(node, rescan_interval=60)
    k.wait_all_registered(["nvidia.com/vf", "nvidia.com/sf"], timeout=15)
    _, vfs = k.wait_devices("nvidia.com/vf", lambda devs: len(devs) == 4, timeout=5)
    assert ids_of(vfs) == VFS
    assert set(health_of(vfs).values()) == {"Healthy"}
    _, sfs = k.wait_devices("nvidia.com/sf", lambda devs: len(devs) == 2, timeout=5)
    assert ids_of(sfs) == SFS, "the lightweight SF has no RDMA device: not in an isRdma pool"

    # Allocating the in-pod VF still hands out its uverbs node (no ibdev name to report).
    [got] = k.allocate("nvidia.com/vf", [[IN_POD]])
    assert got == node.ref_allocate("nvidia.com/vf", [IN_POD])
    assert [dev["container_path"] for dev in got["devices"]][0] == "/dev/infiniband/uverbs3"
    assert got["mounts"] == [], "exclusive mode: counters move with the device"
    info = json.loads(got["envs"]["PCIDEVICE_NVIDIA_COM_VF_INFO"])
    assert "rdma_dev" not in info[IN_POD]["rdma"]

    [sf] = k.allocate("nvidia.com/sf", [["mlx5_core.sf.4"]])
    assert sf == node.ref_allocate("nvidia.com/sf", ["mlx5_core.sf.4"])
    assert sf["envs"]["NICPLUG_EAL_ARGS_NVIDIA_COM_SF"] == "-a auxiliary:mlx5_core.sf.4 --iova-mode=va"

    # SIGKILL, then a new daemon: the same IDs come back, the stand-in resumes.
    d.kill()
    mark = k.mark("nvidia.com/vf")
    daemons.start(node, rescan_interval=60)
    _, vfs = k.wait_devices("nvidia.com/vf", lambda devs: len(devs) == 4, timeout=15, after=mark)
    assert ids_of(vfs) == VFS
    assert health_of(vfs)[IN_POD] == "Healthy"
