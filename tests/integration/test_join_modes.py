"""`debvisor join --mode ceph|k8s|all`: one operation of the plugins' join steps — Ceph OSDs
on the lab cluster, then the Kubernetes worker join against the API emulator (kubeadm's
stand-in registers the node) — with the preflight, the plan, and a failure in the
Kubernetes phase rolling back the OSD the Ceph phase created."""

from __future__ import annotations

import datetime as dt
import json
import subprocess
import sys
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from debvisor_core.testing import Runner, StateDir

pytest.importorskip("debvisor_ceph.fileosd", reason="the ceph plugin is not installed")
pytest.importorskip("debvisor_k8s.join", reason="the k8s plugin is not installed")
K8S_TESTS = Path(__file__).resolve().parents[2] / "plugins" / "debvisor_k8s" / "tests"
sys.path.insert(0, str(K8S_TESTS))
from debvisor_ceph.fileosd import connect, mon_json  # noqa: E402
from k8s_emulator import Emulator, make_tls  # noqa: E402
from kubeadm_standin import Kubelet, install  # noqa: E402

pytestmark = [pytest.mark.lab, pytest.mark.root]
TOKEN = "abcdef.0123456789abcdef"


def _ca_hash(ca: Path) -> str:
    import hashlib

    pub = subprocess.run(["openssl", "x509", "-pubkey", "-noout", "-in", str(ca)],
                         capture_output=True, check=True).stdout
    der = subprocess.run(["openssl", "pkey", "-pubin", "-outform", "der"], input=pub,
                         capture_output=True, check=True).stdout
    return "sha256:" + hashlib.sha256(der).hexdigest()


@pytest.fixture
def bed(dv_lab: Any, dv_state: StateDir, tmp_path: Path) -> Iterator[dict[str, Any]]:
    lab_config = dv_lab.require("ceph")
    sec = tomllib.loads(lab_config.read_text())["ceph"]
    emu = Emulator(make_tls(tmp_path / "tls"), tmp_path / "emu").start()
    emu.add_bootstrap_token("abcdef", "0123456789abcdef",
                            expires=dt.datetime.now(dt.UTC) + dt.timedelta(hours=1))
    token = tmp_path / "join.token"
    token.write_text(TOKEN)
    token.chmod(0o600)
    kubeadm = install(tmp_path / "bin")
    kubelet_conf = tmp_path / "etc-kubernetes" / "kubelet.conf"
    dv_state.config({
        "ceph": {"join": {"devices": ["file:1G"], "initial_weight": 0}},
        "k8s": {"kubeadm": str(kubeadm), "kubelet_conf": str(kubelet_conf),
                "join": {"api": emu.url.removeprefix("https://"), "token_file": str(token),
                         "ca_hash": _ca_hash(emu.tls.ca_cert), "node_name": "worker3"}}},
        base=lab_config)
    kubelet = Kubelet(emu, "worker3").__enter__()
    env = {"KUBEADM_STANDIN_LOG": str(tmp_path / "kubeadm.log"),
           "KUBEADM_STANDIN_ADMIN": str(emu.kubeconfig),
           "KUBEADM_STANDIN_KUBELET_CONF": str(kubelet_conf)}
    with connect(sec["conf"], sec["keyring"]) as c:
        before = set(mon_json(c, "osd ls"))
    try:
        yield {"emu": emu, "env": env, "sec": sec, "before": before, "tmp": tmp_path}
    finally:
        kubelet.__exit__()
        emu.stop()
    with connect(sec["conf"], sec["keyring"]) as c:
        assert set(mon_json(c, "osd ls")) == before, "a joined OSD was left behind"


def _osds(bed: dict[str, Any]) -> set[int]:
    with connect(bed["sec"]["conf"], bed["sec"]["keyring"]) as c:
        return set(mon_json(c, "osd ls")) - bed["before"]


def test_join_all_plans_runs_and_rolls_back(dv: Runner, bed: dict[str, Any]) -> None:
    dry = dv("join", "--mode", "all", "--dry-run", env=bed["env"])
    assert dry.code == 0, dry
    assert "[ceph] create OSD" in dry.stdout or "[ceph]" in dry.stdout, dry.stdout
    assert "[k8s] kubeadm join" in dry.stdout and _osds(bed) == set()

    res = dv("--json", "join", "--mode", "all", "--yes", env=bed["env"])
    assert res.code == 0 and res.json["status"] == "succeeded", res
    (osd,) = res.json["result"]["osds"]
    assert _osds(bed) == {osd} and bed["emu"].get("nodes", "worker3") is not None
    nothing = dv("join", "--mode", "k8s", "--yes", env=bed["env"])  # joined: nothing to add
    assert nothing.code == 0 and "nothing to join for mode k8s" in nothing.stdout, nothing

    back = dv("join", "--rollback", "--yes", env=bed["env"])
    assert back.code == 0, back
    assert _osds(bed) == set() and bed["emu"].get("nodes", "worker3") is None


def test_a_failed_kubernetes_join_removes_the_new_osd(dv: Runner, bed: dict[str, Any]) -> None:
    res = dv("join", "--mode", "all", "--yes", env={**bed["env"], "KUBEADM_STANDIN_FAIL": "1"})
    assert res.code == 4, res
    assert "kubeadm join failed" in res.stderr and "every applied step was undone" in res.stderr
    assert _osds(bed) == set() and bed["emu"].get("nodes", "worker3") is None
    calls = [json.loads(x)["argv"][0] for x in
             (bed["tmp"] / "kubeadm.log").read_text().splitlines()]
    assert calls == ["join", "reset"]
