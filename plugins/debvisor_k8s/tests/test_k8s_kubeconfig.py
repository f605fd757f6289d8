"""Which kubeconfig the plugin reads: a ``KUBECONFIG`` list is merged the way kubectl merges
it (every file, the first current-context wins), checked against kubectl itself."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import Any

import yaml


def _split(emu: Any, tmp: Path) -> tuple[Path, Path]:
    """The emulator's kubeconfig as two files: the context (and current-context) in the first,
    the cluster and user in the second, which also names a broken current-context."""
    conf = yaml.safe_load(emu.kubeconfig.read_text())
    ctx_file, rest = tmp / "contexts.yaml", tmp / "clusters.yaml"
    ctx_file.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "current-context": conf["current-context"],
        "contexts": conf["contexts"]}))
    rest.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "current-context": "nowhere",
        "contexts": [{"name": "nowhere", "context": {"cluster": "nowhere", "user": "nobody"}}],
        "clusters": [*conf["clusters"], {"name": "nowhere",
                                         "cluster": {"server": "https://127.0.0.1:9"}}],
        "users": [*conf["users"], {"name": "nobody", "user": {"token": "x"}}]}))
    for f in (ctx_file, rest):
        f.chmod(0o600)
    return ctx_file, rest


def test_a_kubeconfig_list_is_merged_as_kubectl_merges_it(dv: Any, k8s_api: Any,
                                                          kubectl_bin: Path,
                                                          tmp_path: Path) -> None:
    k8s_api.add(k8s_api.node("worker1"))
    first, second = _split(k8s_api, tmp_path)
    missing = tmp_path / "absent.yaml"  # kubectl skips a listed file that does not exist
    env = {"KUBECONFIG": os.pathsep.join(map(str, (missing, first, second)))}
    ref = subprocess.run([str(kubectl_bin), "get", "nodes", "-o", "name"], env={**os.environ, **env},
                         capture_output=True, text=True, timeout=60)
    assert ref.returncode == 0 and ref.stdout.strip() == "node/worker1", ref
    res = dv("--json", "k8s", "nodes", env=env)
    assert res.code == 0, res
    assert [n["name"] for n in res.json["nodes"]] == ["worker1"]


def test_no_kubeconfig_in_the_list_is_one_sentence(dv: Any, tmp_path: Path) -> None:
    env = {"KUBECONFIG": os.pathsep.join([str(tmp_path / "a"), str(tmp_path / "b")])}
    res = dv("k8s", "nodes", env=env)
    assert res.code == 2 and "no kubeconfig at" in res.stderr and "Traceback" not in res.stderr
