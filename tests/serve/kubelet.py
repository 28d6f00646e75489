"""A kubelet stand-in for device plugins, on grpcio (C-core): an HTTP/2 + gRPC stack independent
of the plugin's tonic/h2.

It does what kubelet's device manager does on the wire:
- serves `Registration.Register` on `<kubelet dir>/device-plugins/kubelet.sock`;
- during `Register`, dials the plugin's socket back, calls `GetDevicePluginOptions` and, once
  that answered, opens one `ListAndWatch` stream read by a thread (every message is recorded
  with a monotonic timestamp);
- on restart, stops, deletes every file in `device-plugins/` except
  `kubelet_internal_checkpoint`, and listens again.

The dial-back never waits for the plugin to come up: a plugin that registers before it serves
is seen failing, as a strict kubelet would. A second registration of the same resource replaces
the first client, whose stream the stand-in then cancels (kubelet keeps it; a plugin must
survive either).

`Ledger` collects the Allocate answers of one plugin lifetime and checks that no device was
handed out twice.

`PodResources` is kubelet's pod resources API (`List`, proto/podresources/v1/api.proto) on
`<kubelet dir>/pod-resources/kubelet.sock`; `Kubelet.serve_pod_resources()` answers it with the
devices the stand-in allocated and has not released (`Kubelet.release`), as kubelet does while
the pods that hold them run.
"""

import hashlib
import re
import shutil
import sys
import tempfile
import threading
import time
from collections import defaultdict, namedtuple
from concurrent import futures
from contextlib import contextmanager
from pathlib import Path

import grpc

from harness import REPO, STUB_ROOT, pb2, pb2_grpc

POD_PROTO = REPO / "proto" / "podresources" / "v1" / "api.proto"


def load_pod_stubs():
    """Stubs of the pod resources proto, under a module name of their own (`podres_pb2`)."""
    digest = hashlib.sha256(POD_PROTO.read_bytes()).hexdigest()[:16]
    out = STUB_ROOT / f"podres-{digest}"
    if not (out / "podres_pb2_grpc.py").exists():
        from grpc_tools import protoc

        STUB_ROOT.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(dir=STUB_ROOT, prefix=".gen-"))
        shutil.copy(POD_PROTO, tmp / "podres.proto")
        rc = protoc.main(["grpc_tools.protoc", f"-I{tmp}", f"--python_out={tmp}",
                          f"--grpc_python_out={tmp}", str(tmp / "podres.proto")])
        if rc != 0:
            raise RuntimeError(f"grpc_tools.protoc failed ({rc}) on {POD_PROTO}")
        try:
            tmp.rename(out)
        except OSError:
            shutil.rmtree(tmp, ignore_errors=True)
    if str(out) not in sys.path:
        sys.path.insert(0, str(out))
    import podres_pb2
    import podres_pb2_grpc

    return podres_pb2, podres_pb2_grpc


pr_pb2, pr_grpc = load_pod_stubs()


class PodResources(pr_grpc.PodResourcesListerServicer):
    """Kubelet's pod resources API stand-in: `pods` is [(namespace, pod, container, resource,
    [ids])] (or a function returning that), answered by `List`."""

    def __init__(self, kubelet_dir, pods):
        self.pods = pods
        self.calls = 0
        self.path = Path(kubelet_dir) / "pod-resources" / "kubelet.sock"
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.server = grpc.server(futures.ThreadPoolExecutor(max_workers=8))
        pr_grpc.add_PodResourcesListerServicer_to_server(self, self.server)
        self.server.add_insecure_port(f"unix:{self.path}")
        self.server.start()

    def List(self, request, context):
        self.calls += 1
        pods = self.pods() if callable(self.pods) else self.pods
        return pr_pb2.ListPodResourcesResponse(pod_resources=[
            pr_pb2.PodResources(namespace=ns, name=pod, containers=[
                pr_pb2.ContainerResources(name=c, devices=[
                    pr_pb2.ContainerDevices(resource_name=r, device_ids=ids)])])
            for ns, pod, c, r, ids in pods
        ])

    def stop(self):
        self.server.stop(0).wait(5)
        try:
            self.path.unlink()
        except FileNotFoundError:
            pass

CHECKPOINT = "kubelet_internal_checkpoint"

Dev = namedtuple("Dev", "id health numa")
"""One advertised device: ID, "Healthy"/"Unhealthy", tuple of NUMA IDs or None (no topology)."""


def devices_of(msg):
    out = []
    for d in msg.devices:
        numa = tuple(n.ID for n in d.topology.nodes) if d.HasField("topology") else None
        out.append(Dev(d.ID, d.health, numa))
    return tuple(out)


def ids_of(devs):
    return [d.id for d in devs]


def health_of(devs):
    return {d.id: d.health for d in devs}


def car_to_dict(car):
    """A ContainerAllocateResponse in the shape `nicplug allocate` prints."""
    return {
        "envs": dict(car.envs),
        "mounts": [
            {"container_path": m.container_path, "host_path": m.host_path,
             "read_only": m.read_only}
            for m in car.mounts
        ],
        "devices": [
            {"container_path": d.container_path, "host_path": d.host_path,
             "permissions": d.permissions}
            for d in car.devices
        ],
        "annotations": dict(car.annotations),
        "cdi_devices": [{"name": c.name} for c in car.cdi_devices],
    }


# Device nodes only one device may own (rdma_cm and /dev/vfio/vfio are shared by design; a VFIO
# group node is shared by the functions of one IOMMU group).
EXCLUSIVE_NODE = re.compile(r"(uverbs|umad|issm)[0-9]+")


def exclusive_of(car):
    """What an Allocate answer (`car_to_dict`) gives its container alone: the host paths of its
    uverbsN/umadN/issmN nodes and of its counters mounts (every mount nicplug makes is one)."""
    nodes = [d["host_path"] for d in car["devices"]
             if EXCLUSIVE_NODE.fullmatch(Path(d["host_path"]).name)]
    return frozenset(nodes + [m["host_path"] for m in car["mounts"]])


def advertised_twice(kubelet):
    """Device IDs in the latest ListAndWatch messages of more than one pool: {id: [pools]}."""
    pools = defaultdict(list)
    with kubelet.cond:
        for resource, conn in kubelet.current.items():
            for dev in conn.latest() or ():
                pools[dev.id].append(resource)
    return {i: rs for i, rs in pools.items() if len(rs) > 1}


class Ledger:
    """The Allocate answers of one plugin lifetime (one daemon run), to show no device was
    handed out twice. Record only devices the host leaves alone meanwhile: a device the kernel
    re-creates may rightly get other nodes. Thread-safe."""

    def __init__(self):
        self.lock = threading.Lock()
        self.first = {}  # (resource, sorted IDs) -> exclusive_of(first answer)
        self.changed = []  # (key, first, later): the same IDs given other nodes
        self.count = 0

    def record(self, resource, ids, car):
        key = (resource, tuple(sorted(ids)))
        got = exclusive_of(car)
        with self.lock:
            self.count += 1
            first = self.first.setdefault(key, got)
            if got != first and len(self.changed) < 10:
                self.changed.append((key, first, got))

    def allocate_all(self, kubelet):
        """Allocate every healthy device each registered pool advertises (kubelet admits no
        other), one per container; returns the IDs allocated."""
        done = []
        for resource in kubelet.resources():
            for dev in kubelet.devices(resource):
                if dev.health == "Healthy":
                    (car,) = kubelet.allocate(resource, [[dev.id]])
                    self.record(resource, [dev.id], car)
                    done.append(dev.id)
        return done

    def check_exclusive(self):
        """Assert: answers for disjoint sets of IDs share no exclusive node or counters mount,
        and the same IDs always got the same ones."""
        with self.lock:
            assert not self.changed, f"the same devices got other nodes: {self.changed}"
            owners = defaultdict(list)
            for key, paths in self.first.items():
                for p in paths:
                    owners[p].append(key)
        shared = {p: keys for p, keys in owners.items()
                  if any(not set(a[1]) & set(b[1]) for a in keys for b in keys)}
        assert not shared, f"handed to different devices: {shared}"

    def check(self, kubelet):
        """Assert: (1) each device ID is advertised by one pool only, the pool it was allocated
        from; (2) answers for disjoint sets of IDs share no exclusive node or counters mount;
        (3) the same IDs always got the same ones."""
        twice = advertised_twice(kubelet)
        assert not twice, f"advertised by several pools: {twice}"
        with kubelet.cond:
            pool_of = {dev.id: r for r, c in kubelet.current.items() for dev in c.latest() or ()}
        with self.lock:
            assert not self.changed, f"the same devices got other nodes: {self.changed}"
            elsewhere = [(ids, r, pool_of[i]) for r, ids in self.first
                         for i in ids if pool_of.get(i, r) != r]
            assert not elsewhere, f"allocated from one pool, advertised by another: {elsewhere}"
            owners = defaultdict(list)
            for key, paths in self.first.items():
                for p in paths:
                    owners[p].append(key)
        shared = {p: keys for p, keys in owners.items()
                  if any(not set(a[1]) & set(b[1]) for a in keys for b in keys)}
        assert not shared, f"handed to different devices: {shared}"


def unix_target(path):
    return "unix:" + str(Path(path).resolve())


def plugin_channel(path, authority="localhost"):
    opts = [] if authority is None else [("grpc.default_authority", authority)]
    return grpc.insecure_channel(unix_target(path), options=opts)


class Registration:
    def __init__(self, t, request):
        self.t = t
        self.request = request
        self.ok = False
        self.error = None
        self.conn = None

    def __repr__(self):
        r = self.request
        state = "ok" if self.ok else f"failed: {self.error}"
        return f"<Register {r.resource_name} endpoint={r.endpoint} at {self.t:.3f} {state}>"


class PluginConn:
    """Kubelet's client for one registered plugin: one channel, one ListAndWatch stream."""

    def __init__(self, kubelet, resource, endpoint):
        self.kubelet = kubelet
        self.resource = resource
        self.endpoint = endpoint
        self.path = kubelet.plugin_dir / endpoint
        self.channel = plugin_channel(self.path, kubelet.authority)
        self.stub = pb2_grpc.DevicePluginStub(self.channel)
        self.options = None
        self.messages = []  # [(monotonic time, (Dev, ...))]
        self.ended = None  # (monotonic time, grpc.StatusCode or None for a clean end)
        self.closed_by_us = False
        self.call = None
        self.thread = None

    def open_stream(self):
        self.call = self.stub.ListAndWatch(pb2.Empty())
        self.thread = threading.Thread(
            target=self._read, name=f"ListAndWatch {self.resource}", daemon=True
        )
        self.thread.start()

    def _read(self):
        code = None
        try:
            for msg in self.call:
                t = time.monotonic()
                with self.kubelet.cond:
                    self.messages.append((t, devices_of(msg)))
                    self.kubelet.cond.notify_all()
        except grpc.RpcError as e:
            code = e.code()
        with self.kubelet.cond:
            self.ended = (time.monotonic(), code)
            self.kubelet.cond.notify_all()

    @property
    def stream_open(self):
        return self.call is not None and self.ended is None

    def latest(self):
        return self.messages[-1][1] if self.messages else None

    def close(self):
        self.closed_by_us = True
        if self.call is not None:
            self.call.cancel()
        self.channel.close()
        if self.thread is not None:
            self.thread.join(5)


class _RegistrationServicer(pb2_grpc.RegistrationServicer):
    def __init__(self, kubelet):
        self.kubelet = kubelet

    def Register(self, request, context):
        return self.kubelet._register(request, context)


class Kubelet:
    def __init__(self, kubelet_dir, authority="localhost"):
        self.kubelet_dir = Path(kubelet_dir)
        self.plugin_dir = self.kubelet_dir / "device-plugins"
        self.socket = self.plugin_dir / "kubelet.sock"
        self.authority = authority
        self.cond = threading.Condition()
        self.all_registrations = []  # every Register call, in order
        self.current = {}  # resource -> PluginConn (the latest good registration)
        self.old_conns = []
        self.reject = 0  # answer the next N Register calls with UNAVAILABLE
        self.server = None
        self.generation = 0  # one per kubelet life
        self.started_at = None
        self.restarts = []  # monotonic times at which a restarted kubelet listened again
        self.held = {}  # pod name -> (resource, [ids]): allocated and not released
        self.pod_count = 0
        self.pod_resources = None

    # ---- lifecycle

    def start(self):
        self.plugin_dir.mkdir(parents=True, exist_ok=True)
        checkpoint = self.plugin_dir / CHECKPOINT
        if not checkpoint.exists():
            checkpoint.write_text('{"Data":{"PodDeviceEntries":null,"RegisteredDevices":{}},'
                                  '"Checksum":0}')
        server = grpc.server(futures.ThreadPoolExecutor(max_workers=16))
        pb2_grpc.add_RegistrationServicer_to_server(_RegistrationServicer(self), server)
        if server.add_insecure_port(unix_target(self.socket)) == 0:
            raise RuntimeError(f"cannot listen on {self.socket}")
        server.start()
        with self.cond:
            self.generation += 1
        self.server = server
        self.started_at = time.monotonic()
        return self.started_at

    def _close_conns(self):
        with self.cond:
            conns = list(self.current.values())
            self.old_conns.extend(conns)
            self.current.clear()
        for c in conns:
            c.close()

    def stop(self):
        with self.cond:
            self.generation += 1  # Register calls still in flight belong to a dead kubelet
        if self.server is not None:
            self.server.stop(grace=None).wait(10)
            self.server = None
        self._close_conns()

    def restart(self):
        """What a kubelet restart looks like to a plugin: streams break, every file in
        device-plugins/ (kubelet.sock included) but the checkpoint is deleted, a new
        kubelet.sock listens. Returns the monotonic time at which the new kubelet listens."""
        self.stop()
        for entry in self.plugin_dir.iterdir():
            if entry.name != CHECKPOINT and not entry.is_dir():
                entry.unlink(missing_ok=True)  # a plugin may be renaming its own file
        t = self.start()
        self.restarts.append(t)
        return t

    # ---- Registration service

    def _register(self, request, context):
        reg = Registration(time.monotonic(), request)
        with self.cond:
            generation = self.generation
            self.all_registrations.append(reg)
            rejecting = self.reject > 0
            if rejecting:
                self.reject -= 1
        if rejecting:
            reg.error = "rejected by the test (UNAVAILABLE)"
            with self.cond:
                self.cond.notify_all()
            context.abort(grpc.StatusCode.UNAVAILABLE, "kubelet is not ready (test)")
        problem = None
        if request.version != "v1beta1":
            problem = f"unsupported version {request.version!r}"
        elif not request.endpoint or "/" in request.endpoint:
            problem = f"endpoint must be a file name in device-plugins/: {request.endpoint!r}"
        elif "/" not in request.resource_name:
            problem = f"resource name is not an extended resource: {request.resource_name!r}"
        if problem:
            reg.error = problem
            with self.cond:
                self.cond.notify_all()
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, problem)

        conn = PluginConn(self, request.resource_name, request.endpoint)
        try:
            conn.options = conn.stub.GetDevicePluginOptions(pb2.Empty(), timeout=10)
        except grpc.RpcError as e:
            conn.close()
            reg.error = f"dial-back GetDevicePluginOptions failed: {e.code()} {e.details()}"
            with self.cond:
                self.cond.notify_all()
            context.abort(grpc.StatusCode.UNKNOWN, reg.error)
        conn.open_stream()
        with self.cond:
            if generation != self.generation:
                stale = True
            else:
                stale = False
                old = self.current.get(request.resource_name)
                self.current[request.resource_name] = conn
                if old is not None:
                    self.old_conns.append(old)
                reg.ok = True
                reg.conn = conn
            if stale:
                reg.error = "kubelet restarted during this Register"
            self.cond.notify_all()
        if stale:
            conn.close()
            context.abort(grpc.StatusCode.UNAVAILABLE, reg.error)
        if old is not None:
            old.close()
        return pb2.Empty()

    # ---- queries

    def registrations(self, resource=None, ok=True):
        with self.cond:
            return [r for r in self.all_registrations
                    if (resource is None or r.request.resource_name == resource)
                    and (ok is None or r.ok == ok)]

    def resources(self):
        with self.cond:
            return sorted(self.current)

    def conn(self, resource):
        with self.cond:
            return self.current.get(resource)

    def devices(self, resource):
        with self.cond:
            c = self.current.get(resource)
            return c.latest() if c else None

    def _wait(self, pred, timeout, what):
        deadline = time.monotonic() + timeout
        with self.cond:
            while True:
                got = pred()
                if got:
                    return got
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"timed out after {timeout}s waiting for {what}; "
                                       f"registrations so far: {self.all_registrations}")
                self.cond.wait(min(left, 0.2))

    def wait_registered(self, resource, timeout=10, after=None):
        """Wait for a successful registration of `resource` (the first one arriving at or
        after monotonic time `after`, if given) whose ListAndWatch stream has delivered its
        first message; returns that Registration."""

        def done():
            for r in self.all_registrations:
                if (r.ok and r.request.resource_name == resource
                        and (after is None or r.t >= after) and r.conn.messages):
                    return r
            return None

        since = "" if after is None else f" after t={after:.3f}"
        return self._wait(done, timeout, f"a registration of {resource}{since}")

    def wait_all_registered(self, resources, timeout=10, after=None):
        return {r: self.wait_registered(r, timeout, after) for r in resources}

    def mark(self, resource):
        """A point in `resource`'s message history: later waits only look at newer messages."""
        with self.cond:
            c = self.current.get(resource)
            return (c, len(c.messages) if c else 0)

    def wait_devices(self, resource, predicate, timeout=10, after=None):
        """Wait until a ListAndWatch message of `resource` (newer than `after`, a `mark()`)
        satisfies `predicate(devs)`; returns (arrival time, devs)."""
        seen = []

        def found():
            c = self.current.get(resource)
            if c is None:
                return None
            start = 0
            if after is not None and after[0] is c:
                start = after[1]
            for t, devs in c.messages[start:]:
                if predicate(devs):
                    return (t, devs)
            if c.messages:
                seen[:] = [c.messages[-1][1]]
            return None

        try:
            return self._wait(found, timeout, f"a ListAndWatch message of {resource} matching")
        except TimeoutError as e:
            raise TimeoutError(f"{e}\nlast message seen: {seen[0] if seen else None}") from None

    def wait_settled(self, resource, predicate, settle=1.0, timeout=10):
        """Wait until the newest ListAndWatch message of `resource` satisfies `predicate`
        and no newer one has come for `settle` seconds; returns its devices. Unlike
        `wait_devices`, an old message that once matched does not count: use this when the
        host flipped back and forth and only the final state matters."""

        def found():
            c = self.current.get(resource)
            if c is None or not c.messages:
                return None
            t, devs = c.messages[-1]
            if predicate(devs) and time.monotonic() - t >= settle:
                return devs
            return None

        return self._wait(found, timeout, f"the newest message of {resource} to match, "
                          f"then {settle}s without another")

    # ---- calls a kubelet makes on admission

    @contextmanager
    def client(self, resource, authority="localhost"):
        conn = self.conn(resource)
        assert conn is not None, f"{resource} is not registered"
        channel = plugin_channel(conn.path, authority)
        try:
            yield pb2_grpc.DevicePluginStub(channel)
        finally:
            channel.close()

    def allocate(self, resource, ids_per_container, authority="localhost", timeout=10):
        """Allocate for one pod; returns one dict per container (see `car_to_dict`). The pod
        then holds the devices (see `held`) until `release`d."""
        req = pb2.AllocateRequest(container_requests=[
            pb2.ContainerAllocateRequest(devices_ids=list(ids)) for ids in ids_per_container
        ])
        with self.client(resource, authority) as stub:
            resp = stub.Allocate(req, timeout=timeout)
        with self.cond:
            self.pod_count += 1
            self.held[f"pod-{self.pod_count}"] = (
                resource, [i for ids in ids_per_container for i in ids])
        return [car_to_dict(c) for c in resp.container_responses]

    # ---- pods and the pod resources API

    def release(self, ids=None):
        """The pods holding any of `ids` (every pod when None) end."""
        with self.cond:
            for pod, (_, held) in list(self.held.items()):
                if ids is None or set(held) & set(ids):
                    del self.held[pod]

    def holding(self):
        """What `List` answers: [(namespace, pod, container, resource, [ids])]."""
        with self.cond:
            return [("default", pod, "c", r, list(ids)) for pod, (r, ids) in self.held.items()]

    def serve_pod_resources(self):
        """Answer kubelet's pod resources API with `holding()` (until `stop_pod_resources`)."""
        if self.pod_resources is None:
            self.pod_resources = PodResources(self.kubelet_dir, self.holding)
        return self.pod_resources

    def stop_pod_resources(self):
        if self.pod_resources is not None:
            self.pod_resources.stop()
            self.pod_resources = None

    def preferred(self, resource, requests, timeout=10):
        """`requests`: [(available, must_include, size)]; returns one ID list per container."""
        req = pb2.PreferredAllocationRequest(container_requests=[
            pb2.ContainerPreferredAllocationRequest(
                available_deviceIDs=list(avail), must_include_deviceIDs=list(must),
                allocation_size=size)
            for avail, must, size in requests
        ])
        with self.client(resource) as stub:
            resp = stub.GetPreferredAllocation(req, timeout=timeout)
        return [list(c.deviceIDs) for c in resp.container_responses]

    def options(self, resource, authority="localhost", timeout=10):
        with self.client(resource, authority) as stub:
            return stub.GetDevicePluginOptions(pb2.Empty(), timeout=timeout)
