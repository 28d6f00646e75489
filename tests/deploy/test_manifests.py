"""The manifests in deploy/ against the Kubernetes OpenAPI schemas (kubernetes-validate ships
them, so this runs offline), plus the properties the README promises of them."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
MANIFESTS = sorted(DEPLOY.glob("*.yaml"))
K8S_VERSION = "1.30"


@pytest.mark.parametrize("path", MANIFESTS, ids=lambda p: p.name)
def test_valid_against_kubernetes_schema(path):
    out = subprocess.run(
        [sys.executable, "-m", "kubernetes_validate", "--strict", "-k", K8S_VERSION, str(path)],
        capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr


def load(name):
    return yaml.safe_load((DEPLOY / name).read_text())


def test_daemonset_is_unprivileged_and_mounts_only_what_it_needs():
    pod = load("daemonset.yaml")["spec"]["template"]["spec"]
    [c] = pod["containers"]
    sc = c["securityContext"]
    assert sc["privileged"] is False and sc["capabilities"]["drop"] == ["ALL"]
    assert "add" not in sc["capabilities"]
    assert sc["seccompProfile"] == {"type": "RuntimeDefault"}
    assert sc["allowPrivilegeEscalation"] is False and sc["readOnlyRootFilesystem"] is True
    assert pod["automountServiceAccountToken"] is False
    assert c["resources"]["limits"]["memory"] == "64Mi"
    host_paths = {v["hostPath"]["path"] for v in pod["volumes"] if "hostPath" in v}
    assert host_paths == {"/var/lib/kubelet/device-plugins", "/sys",
                          "/var/run/k8s.cni.cncf.io/devinfo/dp",
                          "/var/lib/kubelet/plugins/nicplug.io"}
    sys_mount = next(m for m in c["volumeMounts"] if m["name"] == "sys")
    assert sys_mount["readOnly"] is True and sys_mount["mountPath"] == "/sys"
    # The DRA driver's checkpoint is read (its devices are never handed out), never written.
    dra = next(m for m in c["volumeMounts"] if m["name"] == "dra-claims")
    assert dra["readOnly"] is True and dra["mountPath"] == "/var/lib/kubelet/plugins/nicplug.io"


def test_configmap_holds_a_config_nicplug_accepts(tmp_path):
    cfg = load("configmap.yaml")["data"]["config.json"]
    f = tmp_path / "config.json"
    f.write_text(cfg)
    json.loads(cfg)
    binary = Path(__file__).resolve().parents[2] / "target" / "debug" / "nicplug"
    out = subprocess.run([str(binary), "config", "check", str(f)], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr


def test_dpdk_pod_is_unprivileged_with_net_raw_and_ipc_lock_only():
    pod = load("dpdk-pod.yaml")["spec"]
    [c] = pod["containers"]
    caps = c["securityContext"]["capabilities"]
    assert caps["drop"] == ["ALL"] and sorted(caps["add"]) == ["IPC_LOCK", "NET_RAW"]
    assert c["securityContext"]["privileged"] is False
    assert not any(m["mountPath"].startswith("/sys") for m in c["volumeMounts"])
    assert "$NICPLUG_EAL_ARGS_NVIDIA_COM_CX6DX_VF" in c["args"][0]


# ---- DRA (deploy/dra): resource.k8s.io/v1 needs the 1.34 schemas.

DRA = DEPLOY / "dra"
DRA_MANIFESTS = sorted(DRA.glob("*.yaml"))
BINARY = Path(__file__).resolve().parents[2] / "target" / "debug" / "nicplug"


@pytest.mark.parametrize("path", DRA_MANIFESTS, ids=lambda p: p.name)
def test_dra_valid_against_kubernetes_1_34_schema(path):
    out = subprocess.run(
        [sys.executable, "-m", "kubernetes_validate", "--strict", "-k", "1.34", str(path)],
        capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr


def test_dra_examples_are_what_nicplug_prints():
    sample = DEPLOY.parent / "fixtures" / "sample-config.json"
    out = subprocess.run([str(BINARY), "--config", str(sample), "dra", "classes", "--examples"],
                         capture_output=True, text=True, check=True)
    text = (DRA / "examples.yaml").read_text()
    body = "".join(line for line in text.splitlines(keepends=True) if not line.startswith("#"))
    assert body == out.stdout, "deploy/dra/examples.yaml is stale: regenerate it (see its header)"
    docs = list(yaml.safe_load_all(body))
    classes = [d for d in docs if d["kind"] == "DeviceClass"]
    assert [c["spec"]["extendedResourceName"] for c in classes] == [
        "nvidia.com/" + r["resourceName"]
        for r in json.loads(sample.read_text())["resourceList"]]
    [tmpl] = [d for d in docs if d["kind"] == "ResourceClaimTemplate"]
    [pod] = [d for d in docs if d["kind"] == "Pod"]
    assert pod["spec"]["resourceClaims"][0]["resourceClaimTemplateName"] == tmpl["metadata"]["name"]
    [c] = pod["spec"]["containers"]
    assert c["securityContext"]["capabilities"] == {"drop": ["ALL"], "add": ["NET_RAW", "IPC_LOCK"]}


def test_dra_daemonset_runs_one_process_with_its_account_and_node_name():
    ds = yaml.safe_load((DRA / "daemonset.yaml").read_text())
    pod = ds["spec"]["template"]["spec"]
    # Slices and claims from one inventory: a second process would be a second view of the node.
    [c] = pod["containers"]
    assert c["args"][-3:] == ["dra", "kubelet", "--publish-slices"]
    assert c["securityContext"]["privileged"] is False
    assert c["securityContext"]["capabilities"] == {"drop": ["ALL"]}
    [env] = [e for e in c["env"] if e["name"] == "NODE_NAME"]
    assert env["valueFrom"]["fieldRef"]["fieldPath"] == "spec.nodeName"
    mounts = {m["mountPath"] for m in c["volumeMounts"]}
    assert {"/var/lib/kubelet/plugins_registry", "/var/lib/kubelet/plugins",
            "/var/run/cdi"} <= mounts
    assert not any(m["mountPath"] == "/sys" and not m.get("readOnly") for m in c["volumeMounts"])
    # The device plugin's record is read, never written.
    [dp] = [m for m in c["volumeMounts"] if m["mountPath"] == "/var/lib/kubelet/device-plugins"]
    assert dp["readOnly"] is True
    rbac = list(yaml.safe_load_all((DRA / "rbac.yaml").read_text()))
    [sa] = [d for d in rbac if d["kind"] == "ServiceAccount"]
    assert pod["serviceAccountName"] == sa["metadata"]["name"]
    assert sa["metadata"]["namespace"] == ds["metadata"]["namespace"]
    [binding] = [d for d in rbac if d["kind"] == "ClusterRoleBinding"]
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": sa["metadata"]["name"],
                                    "namespace": sa["metadata"]["namespace"]}]
    [policy] = [d for d in rbac if d["kind"] == "ValidatingAdmissionPolicy"]
    user = f"system:serviceaccount:{sa['metadata']['namespace']}:{sa['metadata']['name']}"
    assert user in policy["spec"]["matchConditions"][0]["expression"]
