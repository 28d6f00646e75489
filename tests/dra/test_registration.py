"""Registration through plugins_registry, and the HTTP/2 `:authority` forms a client sends.

Kubelet 1.34-1.36's plugin watcher (`pluginmanager/operationexecutor`) and DRA client
(`cm/dra/plugin`) both call grpc-go's `grpc.Dial(socketPath)`: no scheme, so the passthrough
resolver, whose authority is `encodeAuthority(path)` — the path percent-encoded
(`%2Fvar%2Flib%2Fkubelet%2F...`). grpcio and pre-encoding grpc-go send the raw path, which
tonic's HTTP/2 layer (h2) refuses; grpc-go's `unix:` resolver and kubelet's device-plugin
client send `localhost`.
"""

import time

import grpc
import pytest

from dra import KUBELET, Kubelet, channel, kubelet_authority, reg_grpc, reg_pb2

REJECTED = {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN}


def test_get_info_and_notify(driver, kubelet):
    info = kubelet.info
    assert info.type == "DRAPlugin"
    assert info.name == "nicplug.io"
    assert info.endpoint == str(driver.dra_socket)
    assert list(info.supported_versions) == ["v1.DRAPlugin", "v1beta1.DRAPlugin"]
    assert kubelet.service == "v1.DRAPlugin"
    # A refusal is logged, not fatal: the driver keeps serving.
    with channel(driver.reg_socket) as ch:
        reg_grpc.RegistrationStub(ch).NotifyRegistrationStatus(
            reg_pb2.RegistrationStatus(plugin_registered=False, error="test refusal"),
            timeout=10)
    assert driver.proc.poll() is None
    assert Kubelet(driver).register().name == "nicplug.io"
    log = driver.log.read_text()
    assert "registered with kubelet" in log and "test refusal" in log


def test_kubelet_authority_is_the_encoded_path(driver):
    assert kubelet_authority(driver.reg_socket).startswith("%2F")
    assert "/" not in kubelet_authority(driver.reg_socket)


@pytest.mark.parametrize("authority", [KUBELET, "localhost"], ids=["percent-encoded", "localhost"])
@pytest.mark.parametrize("socket", ["reg", "dra"])
def test_authority_forms_that_work(driver, authority, socket):
    k = Kubelet(driver, authority=authority)
    if socket == "reg":
        assert k.register().type == "DRAPlugin"
    else:
        # An empty prepare is a valid call with an empty answer.
        assert dict(k.prepare()) == {}
        k.close()


@pytest.mark.parametrize("socket", ["reg", "dra"])
def test_raw_path_authority_is_the_known_limit(driver, socket):
    path = driver.reg_socket if socket == "reg" else driver.dra_socket
    with channel(path, authority=str(path)) as ch:
        try:
            reg_grpc.RegistrationStub(ch).GetInfo(reg_pb2.InfoRequest(), timeout=10)
        except grpc.RpcError as e:
            assert e.code() in REJECTED, f"{e.code()} {e.details()}"
        else:
            pytest.fail("a raw socket path as :authority is now accepted: update the README "
                        "and src/dra/kubelet.rs, and make this test a positive one")
    assert driver.proc.poll() is None
    assert Kubelet(driver).register().type == "DRAPlugin"


def test_sockets_come_back(driver):
    """Both sockets removed (a kubelet cleanup, an operator): served again, registration works."""
    for sock in (driver.reg_socket, driver.dra_socket):
        sock.unlink()
    deadline = time.monotonic() + 10
    while not (driver.reg_socket.is_socket() and driver.dra_socket.is_socket()):
        assert time.monotonic() < deadline, driver.log.read_text()
        time.sleep(0.05)
    k = Kubelet(driver)
    assert k.register().endpoint == str(driver.dra_socket)
    assert dict(k.prepare()) == {}
    k.close()


def test_stop_removes_sockets(driver):
    driver.stop()
    assert not driver.reg_socket.exists()
    assert not driver.dra_socket.exists()
