"""Registration through plugins_registry, and the HTTP/2 `:authority` forms a client sends.

Kubelet 1.34-1.36's plugin watcher (`pluginmanager/operationexecutor`) and DRA client
(`cm/dra/plugin`) both call grpc-go's `grpc.Dial(socketPath)`: no scheme, so the passthrough
resolver, whose authority is `encodeAuthority(path)`: the path percent-encoded
(`%2Fvar%2Flib%2Fkubelet%2F...`). grpcio and grpc-go before `encodeAuthority` send the raw
path; grpc-go's `unix:` resolver and kubelet's device-plugin client send `localhost`. tonic's
HTTP/2 layer alone refuses the first two (PROTOCOL_ERROR); nicplug's `:authority` front
(src/authority.rs) makes all three work, and the stand-in sends kubelet's form by default.
"""

import time

import pytest

from dra import KUBELET, Kubelet, channel, kubelet_authority, reg_grpc, reg_pb2


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


@pytest.mark.parametrize("authority", [KUBELET, "localhost", "raw-path", None],
                         ids=["percent-encoded", "localhost", "raw-path", "grpcio-default"])
@pytest.mark.parametrize("socket", ["reg", "dra"])
def test_every_authority_form_works(driver, authority, socket):
    path = driver.reg_socket if socket == "reg" else driver.dra_socket
    if authority == "raw-path":
        authority = str(path)
    k = Kubelet(driver, authority=authority)
    if authority is None:  # grpcio's own default for a unix: target
        k.authority = None
    if socket == "reg":
        assert k.register().type == "DRAPlugin"
    else:
        # An empty prepare is a valid call with an empty answer; a second call on the same
        # connection reuses the client's HPACK table.
        assert dict(k.prepare()) == {}
        assert dict(k.unprepare()) == {}
        k.close()
    assert driver.proc.poll() is None


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


def test_one_connection_many_calls(driver):
    """Hundreds of calls on one connection: the front's HPACK decoder follows the client's
    dynamic table through insertions and evictions (grpc-timeout differs on every call)."""
    k = Kubelet(driver)
    k.register()
    for i in range(300):
        assert dict(k.prepare(service="v1.DRAPlugin" if i % 2 else "v1beta1.DRAPlugin")) == {}
    k.close()
    assert driver.proc.poll() is None
