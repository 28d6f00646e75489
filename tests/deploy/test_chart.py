"""deploy/helm/nicplug without a Helm binary (none can be installed here): values.yaml and
variants against values.schema.json (jsonschema, as Helm validates them), the templates
rendered by tests/deploy/gotemplate.py (a Go-template subset renderer that refuses anything
outside its subset), the rendered defaults equal to deploy/, every rendered manifest valid
against the Kubernetes schemas (kubernetes-validate, offline), and the config they carry
accepted by `nicplug config check`."""

import copy
import json
import subprocess
import sys
from pathlib import Path

import jsonschema
import pytest
import yaml

from gotemplate import Unsupported, documents, merge, render_chart, render_text

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "deploy" / "helm" / "nicplug"
DEPLOY = REPO / "deploy"
K8S_VERSION = "1.30"
SCHEMA = json.loads((CHART / "values.schema.json").read_text())
DEFAULTS = yaml.safe_load((CHART / "values.yaml").read_text())


def by_kind(docs):
    return {d["kind"]: d for d in docs}


def validate_k8s(tmp_path, doc):
    f = tmp_path / f"{doc['kind']}.yaml"
    f.write_text(yaml.safe_dump(doc))
    out = subprocess.run(
        [sys.executable, "-m", "kubernetes_validate", "--strict", "-k", K8S_VERSION, str(f)],
        capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr


# --------------------------------------------------------------------------- values schema


def test_default_values_match_the_schema():
    jsonschema.validate(DEFAULTS, SCHEMA)


@pytest.mark.parametrize("change, why", [
    ({"image": {"tag": 1}}, "a number tag"),
    ({"cdi": {"enabled": "yes"}}, "a string for a boolean"),
    ({"metrics": {"port": 70000}}, "a port out of range"),
    ({"kubeletDir": "var/lib/kubelet"}, "a relative kubelet directory"),
    ({"resourcePrefix": "Nvidia.com"}, "a prefix that is not a DNS name"),
    ({"config": {"existingConfigMap": "", "inline": ""}}, "no config at all"),
    ({"imagePullPolicy": "Always"}, "a misplaced key"),
    ({"metrics": {"serviceMonitor": {"interval": "soon"}}}, "an interval Prometheus rejects"),
])
def test_schema_rejects_bad_values(change, why):
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(merge(DEFAULTS, change), SCHEMA)


# --------------------------------------------------------------------------- rendering


def test_rendered_defaults_equal_deploy():
    docs = by_kind(documents(render_chart(CHART)))
    assert set(docs) == {"ConfigMap", "DaemonSet"}
    assert docs["ConfigMap"] == yaml.safe_load((DEPLOY / "configmap.yaml").read_text())
    assert docs["DaemonSet"] == yaml.safe_load((DEPLOY / "daemonset.yaml").read_text())


VARIANTS = {
    "existing-configmap": {"config": {"existingConfigMap": "sriovdp-config"}},
    "cdi": {"cdi": {"enabled": True, "hostDir": "/etc/cdi"}},
    "metrics": {"metrics": {"enabled": True, "port": 9441,
                            "serviceMonitor": {"enabled": True,
                                               "labels": {"release": "prometheus"}}}},
    "everything": {"image": {"repository": "registry.example/nicplug", "tag": "0.1.0-rc1",
                             "pullPolicy": "Always"},
                   "imagePullSecrets": [{"name": "regcred"}],
                   "resourcePrefix": "example.com", "logLevel": "nicplug=debug",
                   "kubeletDir": "/var/lib/k0s/kubelet",
                   # Helm merges maps: null drops the default NFD label.
                   "nodeSelector": {"node-role.kubernetes.io/dpdk": "",
                                    "feature.node.kubernetes.io/pci-15b3.present": None},
                   "tolerations": [], "resources": None, "priorityClassName": ""},
}


@pytest.mark.parametrize("variant", VARIANTS)
def test_variants_render_to_valid_manifests(tmp_path, variant):
    values = VARIANTS[variant]
    jsonschema.validate(merge(DEFAULTS, values), SCHEMA)
    docs = documents(render_chart(CHART, values))
    for doc in docs:
        if doc["kind"] != "ServiceMonitor":  # a CRD: no schema in kubernetes-validate
            validate_k8s(tmp_path, doc)
    kinds = by_kind(docs)
    pod = kinds["DaemonSet"]["spec"]["template"]["spec"]
    (c,) = pod["containers"]
    args = c["args"]
    mounts = {m["name"]: m for m in c["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    if variant == "existing-configmap":
        assert "ConfigMap" not in kinds
        assert volumes["config"]["configMap"]["name"] == "sriovdp-config"
    if variant == "cdi":
        assert ["--cdi", "--cdi-dir=/etc/cdi"] == args[-2:]
        assert mounts["cdi"]["mountPath"] == "/etc/cdi"
        assert volumes["cdi"]["hostPath"]["path"] == "/etc/cdi"
    if variant == "metrics":
        assert "--metrics-addr=0.0.0.0:9441" in args
        assert c["ports"] == [{"name": "metrics", "containerPort": 9441, "protocol": "TCP"}]
        svc, sm = kinds["Service"], kinds["ServiceMonitor"]
        labels = kinds["DaemonSet"]["spec"]["template"]["metadata"]["labels"]
        assert svc["spec"]["selector"] == labels
        assert svc["spec"]["ports"][0]["targetPort"] == "metrics"
        assert sm["spec"]["selector"]["matchLabels"] == svc["metadata"]["labels"]
        assert sm["metadata"]["labels"]["release"] == "prometheus"
        assert sm["spec"]["endpoints"] == [{"port": "metrics", "path": "/metrics",
                                            "interval": "30s"}]
    if variant == "everything":
        assert c["image"] == "registry.example/nicplug:0.1.0-rc1"
        assert c["imagePullPolicy"] == "Always"
        assert pod["imagePullSecrets"] == [{"name": "regcred"}]
        assert args.index("--resource-prefix=example.com") < args.index("serve")
        assert "--kubelet-dir=/var/lib/k0s/kubelet" in args
        assert mounts["device-plugins"]["mountPath"] == "/var/lib/k0s/kubelet/device-plugins"
        assert pod["nodeSelector"] == {"kubernetes.io/os": "linux",
                                       "node-role.kubernetes.io/dpdk": ""}
        for key in ("tolerations", "priorityClassName"):
            assert key not in pod
        assert "resources" not in c


def test_inline_config_is_what_nicplug_accepts(tmp_path):
    other = {"resourceList": [{"resourceName": "vfs", "selectors": {"vendors": ["15b3"]}}]}
    for values in ({}, {"config": {"inline": json.dumps(other, indent=2) + "\n"}}):
        cm = by_kind(documents(render_chart(CHART, values)))["ConfigMap"]
        f = tmp_path / "config.json"
        f.write_text(cm["data"]["config.json"])
        binary = REPO / "target" / "debug" / "nicplug"
        out = subprocess.run([str(binary), "config", "check", str(f)], capture_output=True,
                             text=True)
        assert out.returncode == 0, out.stderr
        if values:
            assert json.loads(cm["data"]["config.json"]) == other


# --------------------------------------------------------------------------- the renderer


@pytest.mark.parametrize("template, values, expected", [
    ("a\n  {{- .x }}\nb", {"x": 1}, "a1\nb"),
    ("a {{ .x -}}\n  b", {"x": "v"}, "a vb"),
    ("{{ if .x }}yes{{ else }}no{{ end }}", {"x": []}, "no"),
    ("{{ if .x }}yes{{ else }}no{{ end }}", {"x": 0}, "no"),
    ("{{ if .x }}yes{{ else }}no{{ end }}", {"x": "0"}, "yes"),
    ("{{ with .m }}{{ .k }}{{ end }}", {"m": {"k": "v"}}, "v"),
    ("{{ .t | default .d }}", {"t": "", "d": "x"}, "x"),
    ("{{ .t | default .d }}", {"t": "y", "d": "x"}, "y"),
    ("{{ .s | quote }}", {"s": 'a"b'}, '"a\\"b"'),
    ("k:{{- toYaml .m | nindent 2 }}", {"m": {"b": 1, "a": [1, 2]}},
     "k:\n  a:\n  - 1\n  - 2\n  b: 1"),
    ("{{ if and .a (not .b) }}y{{ end }}", {"a": True, "b": False}, "y"),
    ("{{ .b }}", {"b": True}, "true"),
])
def test_renderer_matches_go_templates(template, values, expected):
    assert render_text(template, values) == expected


@pytest.mark.parametrize("template", [
    '{{ include "x" . }}', "{{ range .l }}{{ end }}", "{{ $x := 1 }}",
    "{{ if .a }}x{{ else if .b }}y{{ end }}", "{{ printf \"%s\" .a }}", "{{ .m }}",
    "{{ if .a }}x", "{{/* c */}}",
])
def test_renderer_refuses_what_it_does_not_implement(template):
    with pytest.raises((Unsupported, KeyError)):
        render_text(template, {"a": 1, "b": 2, "l": [1], "m": {"k": 1}})


def test_renderer_refuses_a_field_values_do_not_define():
    with pytest.raises(KeyError):
        render_text("{{ .Values.image.digest }}", {"Values": DEFAULTS})


def test_variants_leave_the_defaults_alone():
    before = copy.deepcopy(DEFAULTS)
    for values in VARIANTS.values():
        render_chart(CHART, values)
    assert yaml.safe_load((CHART / "values.yaml").read_text()) == before
