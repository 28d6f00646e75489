"""A stand-in for the Kubernetes API server, implementing only what `nicplug dra` asks:

- ResourceSlice (resource.k8s.io/v1, cluster-scoped): list (fieldSelector on spec.nodeName and
  spec.driver, labelSelector `k=v`), get, create, replace, delete;
- ResourceClaim get.

Every body the driver sends is validated against the official 1.34 OpenAPI schema
(kubernetes-validate, strict: unknown fields refused) plus the few ResourceSlice rules the schema
cannot express (DNS names, the 128-device and 32-attribute limits, 64-character strings, exactly
one attribute value); a failure is answered 422 Invalid, as the API server does. A replace whose
metadata.resourceVersion is stale gets 409 Conflict, a create of an existing name 409
AlreadyExists. Every request is recorded (method, path, query, body, monotonic time) for the
tests' assertions. Plain HTTP on 127.0.0.1; the driver reaches it through a kubeconfig.
"""

import json
import re
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse

import kubernetes_validate

K8S_VERSION = "1.34"
SLICES = "/apis/resource.k8s.io/v1/resourceslices"
CLAIMS = re.compile(r"^/apis/resource\.k8s\.io/v1/namespaces/([^/]+)/resourceclaims/([^/]+)$")
DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
C_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def is_subdomain(s):
    return 0 < len(s) <= 253 and all(len(x) <= 63 and DNS_LABEL.match(x) for x in s.split("."))


def slice_problems(obj):
    """ResourceSlice rules of the API server's validation that the OpenAPI schema lacks."""
    out = []
    name = obj.get("metadata", {}).get("name", "")
    if not is_subdomain(name):
        out.append(f"metadata.name: Invalid value: {name!r}: must be a DNS subdomain")
    spec = obj.get("spec", {})
    pool = spec.get("pool", {})
    if not pool.get("name"):
        out.append("spec.pool.name: Required value")
    if pool.get("generation", -1) < 0:
        out.append("spec.pool.generation: must be >= 0")
    if pool.get("resourceSliceCount", 0) < 1:
        out.append("spec.pool.resourceSliceCount: must be > 0")
    if not spec.get("driver") or not is_subdomain(spec["driver"]):
        out.append("spec.driver: must be a DNS subdomain")
    devices = spec.get("devices") or []
    if len(devices) > 128:
        out.append(f"spec.devices: Too many: {len(devices)}: must have at most 128 items")
    seen = set()
    for i, d in enumerate(devices):
        n = d.get("name", "")
        if not (len(n) <= 63 and DNS_LABEL.match(n)):
            out.append(f"spec.devices[{i}].name: Invalid value: {n!r}: must be a DNS label")
        if n in seen:
            out.append(f"spec.devices[{i}].name: Duplicate value: {n!r}")
        seen.add(n)
        attrs = d.get("attributes") or {}
        if len(attrs) + len(d.get("capacity") or {}) > 32:
            out.append(f"spec.devices[{i}]: more than 32 attributes and capacities")
        for k, v in attrs.items():
            dom, _, ident = k.rpartition("/")
            if (dom and not is_subdomain(dom)) or not C_IDENT.match(ident) or len(ident) > 32:
                out.append(f"spec.devices[{i}].attributes[{k}]: invalid qualified name")
            if len([x for x in ("bool", "int", "string", "version") if x in v]) != 1:
                out.append(f"spec.devices[{i}].attributes[{k}]: exactly one value must be set")
            if len(v.get("string", "")) > 64:
                out.append(f"spec.devices[{i}].attributes[{k}].string: longer than 64")
    return out


def status(code, reason, message):
    return code, {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                  "message": message, "reason": reason, "code": code}


class State:
    def __init__(self):
        self.lock = threading.Lock()
        self.slices = {}  # name -> object
        self.claims = {}  # (ns, name) -> object
        self.version = 100
        self.requests = []  # dicts: method, path, query, body, t, code
        # Test hook: before answering the next replace of this slice, change it as another
        # writer would (its resourceVersion moves on), so the replace meets a real conflict.
        self.race_next_replace = set()
        self.cond = threading.Condition(self.lock)

    def next_version(self):
        self.version += 1
        return str(self.version)

    def wait(self, pred, timeout):
        """Wait until pred(self) holds (checked after every request); returns it."""
        end = time.monotonic() + timeout
        with self.cond:
            while True:
                v = pred(self)
                if v:
                    return v
                left = end - time.monotonic()
                if left <= 0:
                    raise TimeoutError("stand-in API server: condition not met")
                self.cond.wait(left)


def selected(obj, fields, labels):
    spec = obj.get("spec", {})
    have = {"spec.nodeName": spec.get("nodeName"), "spec.driver": spec.get("driver"),
            "metadata.name": obj["metadata"]["name"]}
    for k, v in fields.items():
        if have.get(k) != v:
            return False
    obj_labels = obj["metadata"].get("labels") or {}
    return all(obj_labels.get(k) == v for k, v in labels.items())


def parse_selector(text, allowed=None):
    out = {}
    for term in filter(None, (text or "").split(",")):
        k, sep, v = term.partition("=")
        if not sep or v.startswith("="):
            raise ValueError(f"unsupported selector term {term!r}")
        if allowed is not None and k not in allowed:
            raise ValueError(f'field label not supported: "{k}"')
        out[k] = v
    return out


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # Headers and body go out in separate writes; with Nagle on, the client's delayed ACK would
    # hold the body ~40 ms, a delay of the stand-in's, not the driver's.
    disable_nagle_algorithm = True
    state: State = None

    def log_message(self, *a):
        pass

    def _body(self):
        n = int(self.headers.get("Content-Length") or 0)
        return json.loads(self.rfile.read(n)) if n else None

    def _answer(self, code, obj):
        data = json.dumps(obj).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _handle(self, method):
        t = time.monotonic()
        url = urlparse(self.path)
        query = parse_qs(url.query)
        try:
            body = self._body()
        except ValueError as e:
            body, result = None, status(400, "BadRequest", f"body is not JSON: {e}")
        else:
            with self.state.lock:
                result = self._route(method, url.path, query, body)
        code, obj = result
        with self.state.cond:
            self.state.requests.append({"method": method, "path": url.path, "query": query,
                                        "body": body, "t": t, "code": code})
            self.state.cond.notify_all()
        self._answer(code, obj)

    def do_GET(self):
        self._handle("GET")

    def do_POST(self):
        self._handle("POST")

    def do_PUT(self):
        self._handle("PUT")

    def do_DELETE(self):
        self._handle("DELETE")

    def _validate(self, body, kind):
        if not isinstance(body, dict):
            return status(400, "BadRequest", "no body")
        if body.get("kind") != kind or body.get("apiVersion") != "resource.k8s.io/v1":
            return status(400, "BadRequest", f"expected {kind} resource.k8s.io/v1")
        try:
            kubernetes_validate.validate(body, K8S_VERSION, strict=True)
        except kubernetes_validate.ValidationError as e:
            return status(422, "Invalid", f"schema: {e.message}")
        problems = slice_problems(body)
        if problems:
            return status(422, "Invalid", "; ".join(problems))
        return None

    def _route(self, method, path, query, body):
        st = self.state
        m = CLAIMS.match(path)
        if m and method == "GET":
            claim = st.claims.get((m.group(1), m.group(2)))
            if claim is None:
                return status(404, "NotFound", f'resourceclaims "{m.group(2)}" not found')
            return 200, claim
        if path == SLICES and method == "GET":
            try:
                fields = parse_selector(query.get("fieldSelector", [""])[0],
                                        {"spec.nodeName", "spec.driver", "metadata.name"})
                labels = parse_selector(query.get("labelSelector", [""])[0])
            except ValueError as e:
                return status(400, "BadRequest", str(e))
            items = [o for _, o in sorted(st.slices.items()) if selected(o, fields, labels)]
            return 200, {"apiVersion": "resource.k8s.io/v1", "kind": "ResourceSliceList",
                         "metadata": {"resourceVersion": str(st.version)}, "items": items}
        if path == SLICES and method == "POST":
            bad = self._validate(body, "ResourceSlice")
            if bad:
                return bad
            name = body["metadata"]["name"]
            if body["metadata"].get("resourceVersion"):
                return status(422, "Invalid", "metadata.resourceVersion: must not be set on create")
            if name in st.slices:
                return status(409, "AlreadyExists", f'resourceslices "{name}" already exists')
            obj = json.loads(json.dumps(body))
            obj["metadata"].update(resourceVersion=st.next_version(), uid=f"uid-{st.version}",
                                   generation=1)
            st.slices[name] = obj
            return 201, obj
        if path.startswith(SLICES + "/"):
            name = path[len(SLICES) + 1:]
            cur = st.slices.get(name)
            if method == "GET":
                if cur is None:
                    return status(404, "NotFound", f'resourceslices "{name}" not found')
                return 200, cur
            if method == "DELETE":
                if cur is None:
                    return status(404, "NotFound", f'resourceslices "{name}" not found')
                del st.slices[name]
                return 200, cur
            if method == "PUT":
                bad = self._validate(body, "ResourceSlice")
                if bad:
                    return bad
                if body["metadata"]["name"] != name:
                    return status(400, "BadRequest", "the name of the object does not match the URL")
                if cur is None:
                    return status(404, "NotFound", f'resourceslices "{name}" not found')
                if name in st.race_next_replace:
                    st.race_next_replace.discard(name)
                    cur["metadata"]["resourceVersion"] = st.next_version()
                rv = body["metadata"].get("resourceVersion")
                if not rv:
                    return status(422, "Invalid",
                                  "metadata.resourceVersion: Invalid value: 0x0: must be "
                                  "specified for an update")
                if rv != cur["metadata"]["resourceVersion"]:
                    return status(409, "Conflict",
                                  f'Operation cannot be fulfilled on resourceslices.resource.k8s.io '
                                  f'"{name}": the object has been modified; please apply your '
                                  f'changes to the latest version and try again')
                obj = json.loads(json.dumps(body))
                obj["metadata"].update(resourceVersion=st.next_version(),
                                       uid=cur["metadata"]["uid"],
                                       generation=cur["metadata"]["generation"] + 1)
                st.slices[name] = obj
                return 200, obj
        return status(404, "NotFound", f"the stand-in does not serve {method} {path}")


class Server(ThreadingHTTPServer):
    def handle_error(self, request, client_address):
        # A client that went away (a driver stopped mid-keepalive) is not the stand-in's error.
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)


class ApiServer:
    """Run the stand-in on an ephemeral 127.0.0.1 port in a thread."""

    def __init__(self):
        self.state = State()
        handler = type("H", (Handler,), {"state": self.state})
        self.httpd = Server(("127.0.0.1", 0), handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def kubeconfig(self, path):
        path.write_text(json.dumps({
            "apiVersion": "v1", "kind": "Config",
            "clusters": [{"name": "stand-in", "cluster": {"server": self.url}}],
            "users": [{"name": "nicplug", "user": {"token": "test-token"}}],
            "contexts": [{"name": "c", "context": {"cluster": "stand-in", "user": "nicplug"}}],
            "current-context": "c",
        }))
        return path

    def stop(self):
        self.httpd.shutdown()
        self.httpd.server_close()
