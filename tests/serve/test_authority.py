"""Contract point 9: the HTTP/2 `:authority` a client sends.

Kubelet >= 1.26 (grpc-go) sends `localhost`; older kubelets, the plugins_registry client, grpcio
and grpc-java send the socket path, which tonic's HTTP/2 layer (h2) rejects with a protocol
error. The path form is the documented limit: this test pins it either way.
"""

import grpc
import pytest

from harness import SAMPLE_POOLS, VF_POOL, pb2, pb2_grpc
from kubelet import plugin_channel

REJECTED = {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN}


@pytest.mark.parametrize("resource", SAMPLE_POOLS)
def test_localhost_authority_works(node, kubelet, serving, resource):
    opts = kubelet.options(resource, authority="localhost")
    assert opts.get_preferred_allocation_available is True
    dev = kubelet.devices(resource)[0].id
    (resp,) = kubelet.allocate(resource, [[dev]], authority="localhost")
    assert resp == node.ref_allocate(resource, [dev])


def test_socket_path_authority_is_the_known_limit(node, kubelet, serving):
    path = kubelet.conn(VF_POOL).path
    channel = plugin_channel(path, authority=str(path))
    stub = pb2_grpc.DevicePluginStub(channel)
    try:
        try:
            stub.GetDevicePluginOptions(pb2.Empty(), timeout=10)
        except grpc.RpcError as e:
            assert e.code() in REJECTED, (
                f"path-form :authority failed, but not the way h2 rejects it: "
                f"{e.code()} {e.details()}")
            print(f"\npath-form :authority rejected as documented: {e.code()} {e.details()}")
        else:
            pytest.fail(
                "a client sending the socket path as :authority (older kubelets, grpcio, "
                "grpc-java, plugins_registry) is now ACCEPTED: the documented limit is gone. "
                "Update the README's interop section and turn this test into a positive one.")
    finally:
        channel.close()
    # The rejection hurt nobody else.
    assert serving.alive()
    assert kubelet.conn(VF_POOL).stream_open
    assert kubelet.options(VF_POOL).get_preferred_allocation_available is True
