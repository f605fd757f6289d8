"""`k8s addon …` against the API emulator: server-side apply with the diff shown first,
readiness from each addon's own checks, third-party addon directories, undo."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from debvisor_core.testing import one_error


@pytest.fixture
def k8s(k8s_api: Any, dv_state: Any, tmp_path: Path) -> Any:
    site = tmp_path / "site-addons"
    (site / "hello").mkdir(parents=True)
    (site / "hello" / "addon.toml").write_text(
        'description = "a site addon"\nmanifests = ["hello.yaml"]\n'
        '[[ready]]\nkind = "Deployment"\nnamespace = "hello"\nname = "hello"\n')
    (site / "hello" / "hello.yaml").write_text(
        "apiVersion: v1\nkind: Namespace\nmetadata: {name: hello}\n---\n"
        "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: hello, namespace: hello}\n"
        "spec:\n  replicas: 2\n  selector: {matchLabels: {app: hello}}\n"
        "  template:\n    metadata: {labels: {app: hello}}\n"
        "    spec: {containers: [{name: hello, image: 'nginx:1.27'}]}\n")
    dv_state.config({"k8s": {"kubeconfig": str(k8s_api.kubeconfig),
                             "addon_dirs": [str(site)]}})
    k8s_api.site = site
    return k8s_api


def test_list_shows_shipped_and_site_addons(dv: Any, k8s: Any) -> None:
    res = dv("--json", "k8s", "addon", "list")
    assert res.code == 0, res
    got = {a["name"]: a for a in res.json["addons"]}
    assert {"metrics-server", "monitoring", "ingress", "hello"} <= set(got)
    assert got["hello"]["source"] == str(k8s.site) and got["ingress"]["source"] == "shipped"
    assert not any(a["enabled"] for a in got.values())


def test_enable_shows_the_diff_applies_and_status_follows_readiness(dv: Any, k8s: Any) -> None:
    dry = dv("k8s", "addon", "enable", "metrics-server", "--dry-run")
    assert dry.code == 0, dry
    plan = dry.stdout + dry.stderr
    assert "+ Deployment kube-system/metrics-server (create)" in plan
    assert "+ APIService v1beta1.metrics.k8s.io (create)" in plan
    assert k8s.get("deployments", "metrics-server", "kube-system") is None  # dry run
    res = dv("k8s", "addon", "enable", "metrics-server", "--yes")
    assert res.code == 0, res
    dep = k8s.get("deployments", "metrics-server", "kube-system")
    assert dep is not None and dep["spec"]["template"]["spec"]["containers"][0]["image"] \
        == "registry.k8s.io/metrics-server/metrics-server:v0.7.2"
    managers = {m.get("manager") for m in dep["metadata"].get("managedFields") or []}
    assert "debvisor" in managers
    applies = [r for r in k8s.requests if r[0] == "PATCH"
               and (r[3] or "").startswith("application/apply-patch")]
    assert applies and all(r[2].get("fieldManager") == "debvisor" for r in applies)
    again = dv("k8s", "addon", "enable", "metrics-server", "--yes")
    assert again.code == 0 and "already as its manifests say" in again.stdout + again.stderr
    st = dv("--json", "k8s", "addon", "status", "metrics-server")
    assert st.code == 1, st
    assert "addon metrics-server is not ready: Deployment metrics-server: 0/1 ready" in st.stderr
    k8s.set_status("deployments", "metrics-server", "kube-system",
                   {"replicas": 1, "readyReplicas": 1, "updatedReplicas": 1,
                    "observedGeneration": dep["metadata"]["generation"]})
    k8s.set_status("apiservices", "v1beta1.metrics.k8s.io", None,
                   {"conditions": [{"type": "Available", "status": "True"}]})
    ok = dv("--json", "k8s", "addon", "status", "metrics-server")
    assert ok.code == 0, ok
    assert ok.json["ready"] is True


def test_changed_object_shows_its_fields_and_rollback_restores(dv: Any, k8s: Any) -> None:
    assert dv("k8s", "addon", "enable", "hello", "--yes").code == 0
    dep = k8s.get("deployments", "hello", "hello")
    assert dep["metadata"]["annotations"]["debvisor.io/created-by-addon"] == "hello"
    dep["spec"]["replicas"] = 5  # someone scaled it by hand
    k8s.add(dep)
    dry = dv("k8s", "addon", "enable", "hello", "--dry-run")
    assert "~ Deployment hello/hello: spec.replicas" in dry.stdout + dry.stderr
    assert "= Namespace hello (unchanged)" in dry.stdout + dry.stderr
    assert dv("k8s", "addon", "enable", "hello", "--yes").code == 0
    assert k8s.get("deployments", "hello", "hello")["spec"]["replicas"] == 2
    back = dv("k8s", "addon", "enable", "hello", "--rollback", "--yes")
    assert back.code == 0, back
    assert k8s.get("deployments", "hello", "hello")["spec"]["replicas"] == 5


def test_disable_deletes_and_its_undo_brings_back(dv: Any, k8s: Any) -> None:
    assert dv("k8s", "addon", "enable", "hello", "--yes").code == 0
    gone = dv("k8s", "addon", "disable", "hello", "--yes")
    assert gone.code == 0, gone
    assert k8s.get("deployments", "hello", "hello") is None
    back = dv("k8s", "addon", "disable", "hello", "--rollback", "--yes")
    assert back.code == 0, back
    assert k8s.get("deployments", "hello", "hello")["spec"]["replicas"] == 2


def test_disable_never_deletes_what_was_there_before(dv: Any, k8s: Any) -> None:
    # another stack already runs in namespace monitoring, with its own kube-state-metrics
    k8s.add({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "monitoring"}})
    k8s.add(k8s.deployment("kube-state-metrics", "monitoring", replicas=1, ready=1))
    k8s.add(k8s.deployment("prometheus", "monitoring", replicas=1, ready=1))
    assert dv("k8s", "addon", "enable", "monitoring", "--yes").code == 0
    assert k8s.get("daemonsets", "node-exporter", "monitoring") is not None
    gone = dv("k8s", "addon", "disable", "monitoring", "--yes")
    assert gone.code == 0, gone
    assert k8s.get("daemonsets", "node-exporter", "monitoring") is None  # the addon's own
    assert k8s.get("deployments", "kube-state-metrics", "monitoring") is not None
    assert k8s.get("deployments", "prometheus", "monitoring") is not None
    assert k8s.get("namespaces", "monitoring") is not None
    listed = {a["name"]: a for a in dv("--json", "k8s", "addon", "list").json["addons"]}
    assert not listed["monitoring"]["enabled"]


def test_a_namespace_the_addon_created_stays_while_it_holds_other_objects(dv: Any,
                                                                          k8s: Any) -> None:
    assert dv("k8s", "addon", "enable", "hello", "--yes").code == 0
    k8s.add(k8s.deployment("someone-elses", "hello", replicas=1, ready=1))
    gone = dv("k8s", "addon", "disable", "hello", "--yes")
    assert gone.code == 0, gone
    assert "namespace hello stays: it holds objects that are not the addon's " \
        "(deployments/someone-elses)" in gone.stderr
    assert k8s.get("deployments", "hello", "hello") is None
    assert k8s.get("deployments", "someone-elses", "hello") is not None


def test_unknown_addon_and_bad_manifest_are_one_sentence(dv: Any, k8s: Any) -> None:
    res = dv("k8s", "addon", "enable", "nosuch", "--yes")
    assert res.code == 2
    assert one_error(res.stderr).startswith("[ERROR] no addon 'nosuch'; there are: hello, ")
    (k8s.site / "hello" / "hello.yaml").write_text("kind: Deployment\nmetadata: {name: x}\n")
    bad = dv("k8s", "addon", "enable", "hello", "--yes")
    assert bad.code == 2 and "without apiVersion, kind and metadata.name" in bad.stderr
    (k8s.site / "hello" / "hello.yaml").write_text(
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: '../../../api/v1/nodes/x'}\n")
    walk = dv("k8s", "addon", "enable", "hello", "--yes")
    assert walk.code == 2 and "is not a valid Kubernetes name" in walk.stderr, walk
