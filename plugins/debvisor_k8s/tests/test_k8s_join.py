"""`k8s join` against the API emulator: kubeadm's token discovery (CA pinned by hash, the
token proven by cluster-info's JWS) before the token is sent, the node name checked with
the token, the join through the kubeadm driver, the wait for a Ready node with its labels
and taints, idempotence, rollback.

kubeadm cannot be installed here (no Debian package, no internet): ``kubeadm_standin.py``
takes its place and registers the node as a kubelet would; a thread plays the kubelet's
status update (Ready)."""

from __future__ import annotations

import datetime as dt
import json
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kubeadm_standin import Kubelet, install

from debvisor_core.testing import one_error

HERE = Path(__file__).parent
TOKEN_ID, TOKEN_SECRET = "abcdef", "0123456789abcdef"
TOKEN = f"{TOKEN_ID}.{TOKEN_SECRET}"


def openssl_ca_hash(ca: Path) -> str:
    """kubeadm's documented recipe: openssl x509 -pubkey | openssl pkey -pubin -outform der
    | sha256 (an implementation independent of the plugin's)."""
    pub = subprocess.run(["openssl", "x509", "-pubkey", "-noout", "-in", str(ca)],
                         capture_output=True, check=True).stdout
    der = subprocess.run(["openssl", "pkey", "-pubin", "-outform", "der"], input=pub,
                         capture_output=True, check=True).stdout
    import hashlib

    return "sha256:" + hashlib.sha256(der).hexdigest()


class Bed:
    def __init__(self, emu: Any, tmp: Path) -> None:
        self.emu = emu
        self.state = Path()
        self.tmp = tmp
        self.log = tmp / "kubeadm.log"
        self.kubelet_conf = tmp / "etc-kubernetes" / "kubelet.conf"
        self.token_file = tmp / "join.token"
        self.token_file.write_text(TOKEN + "\n")
        self.token_file.chmod(0o600)
        self.ca_hash = openssl_ca_hash(emu.tls.ca_cert)
        self.api = emu.url.removeprefix("https://")
        self.kubeadm = install(tmp / "bin")
        self.env = {"KUBEADM_STANDIN_LOG": str(self.log),
                    "KUBEADM_STANDIN_ADMIN": str(emu.kubeconfig),
                    "KUBEADM_STANDIN_KUBELET_CONF": str(self.kubelet_conf)}

    def calls(self) -> list[dict[str, Any]]:
        if not self.log.exists():
            return []
        return [json.loads(x) for x in self.log.read_text().splitlines()]

    def argv(self, *extra: str, token_file: Path | None = None, ca_hash: str | None = None) -> list[str]:
        return ["k8s", "join", "--api", self.api, "--token-file", str(token_file or self.token_file),
                "--ca-hash", ca_hash or self.ca_hash, "--node-name", "worker3", *extra]


@pytest.fixture
def bed(k8s_api: Any, dv_state: Any, tmp_path: Path) -> Iterator[Bed]:
    b = Bed(k8s_api, tmp_path)
    b.state = dv_state.path
    dv_state.config({"k8s": {"kubeadm": str(b.kubeadm), "kubelet_conf": str(b.kubelet_conf)}})
    k8s_api.add_bootstrap_token(TOKEN_ID, TOKEN_SECRET,
                                expires=dt.datetime.now(dt.UTC) + dt.timedelta(hours=1))
    with Kubelet(k8s_api, "worker3"):
        yield b


def test_join_registers_the_node_with_labels_and_taints(dv: Any, bed: Bed) -> None:
    dry = dv(*bed.argv("--labels", "debvisor.io/rack=r12", "--taints", "dedicated=vm:NoSchedule",
                       "--dry-run"), env=bed.env)
    assert dry.code == 0, dry
    assert "kubeadm join" in dry.stdout and bed.calls() == [] and bed.emu.get("nodes", "worker3") is None
    res = dv("--json", *bed.argv("--labels", "debvisor.io/rack=r12", "--taints",
                                 "dedicated=vm:NoSchedule", "--yes"), env=bed.env)
    assert res.code == 0 and res.json["status"] == "succeeded", res
    node = bed.emu.get("nodes", "worker3")
    assert node["metadata"]["labels"]["debvisor.io/rack"] == "r12"
    assert {"key": "dedicated", "value": "vm", "effect": "NoSchedule"} in node["spec"]["taints"]
    (call,) = bed.calls()
    assert call["argv"][:2] == ["join", "--config"] and call["mode"] == 0o600
    assert TOKEN not in " ".join(call["argv"]) and not Path(call["argv"][2]).exists()
    disc = call["config"]["discovery"]["bootstrapToken"]
    assert disc == {"apiServerEndpoint": bed.api, "token": TOKEN, "caCertHashes": [bed.ca_hash]}
    assert call["config"]["apiVersion"] == "kubeadm.k8s.io/v1beta3"
    journal = (bed.state / "ops" / f"{res.json['id']}.jsonl").read_text()
    assert '"k8s.kubeadm-join@1"' in journal and TOKEN_SECRET not in journal
    audit = (bed.state / "log" / "audit.jsonl").read_text()
    assert "join" in audit and TOKEN_SECRET not in audit
    again = dv(*bed.argv("--yes"), env=bed.env)  # idempotent: this host has joined
    assert again.code == 0 and "already joined the cluster as node worker3" in again.stdout, again
    assert dv("k8s", "join", "--rollback", "--yes", env=bed.env).code == 0
    assert bed.emu.get("nodes", "worker3") is None and not bed.kubelet_conf.exists()
    assert bed.calls()[-1]["argv"] == ["reset", "--force"]


def test_the_token_is_not_sent_to_a_server_of_another_ca(dv: Any, bed: Bed) -> None:
    wrong = "sha256:" + "0" * 64
    res = dv(*bed.argv("--yes", ca_hash=wrong), env=bed.env)
    assert res.code == 3 and "is not the cluster --ca-hash names" in res.stderr, res
    assert "the token was not sent" in res.stderr
    # the only request was the anonymous read of cluster-info: the token was never sent
    assert [(r.method, r.path) for r in bed.emu.requests] == \
        [("GET", "/api/v1/namespaces/kube-public/configmaps/cluster-info")]
    assert bed.calls() == []


@pytest.mark.parametrize("token, words", [
    ("zzzzzz.0123456789abcdef", "token zzzzzz is not valid on this cluster"),
    (f"{TOKEN_ID}.ffffffffffffffff", f"the secret of token {TOKEN_ID} is wrong"),
])
def test_unknown_and_wrong_tokens_are_refused_before_the_join(dv: Any, bed: Bed, token: str,
                                                              words: str) -> None:
    f = bed.tmp / "other.token"
    f.write_text(token)
    f.chmod(0o600)
    res = dv(*bed.argv("--yes", token_file=f), env=bed.env)
    assert res.code == 3 and words in one_error(res.stderr), res
    assert bed.calls() == []


def test_an_expired_token_is_named_as_such(dv: Any, bed: Bed) -> None:
    bed.emu.add_bootstrap_token("oldtok", "0123456789abcdef",
                                expires=dt.datetime.now(dt.UTC) - dt.timedelta(minutes=1))
    f = bed.tmp / "old.token"
    f.write_text("oldtok.0123456789abcdef")
    f.chmod(0o600)
    res = dv(*bed.argv("--yes", token_file=f), env=bed.env)
    assert res.code == 3 and "unknown or expired" in res.stderr, res


def test_a_node_name_in_use_is_refused(dv: Any, bed: Bed) -> None:
    bed.emu.add(bed.emu.node("worker3"))
    res = dv(*bed.argv("--yes"), env=bed.env)
    assert res.code == 3 and "node name worker3 is already used" in res.stderr, res
    assert bed.calls() == []


def test_a_failed_join_is_reset(dv: Any, bed: Bed) -> None:
    res = dv(*bed.argv("--yes"), env={**bed.env, "KUBEADM_STANDIN_FAIL": "1"})
    assert res.code == 4 and "kubeadm join failed (exit 1)" in res.stderr, res
    assert [c["argv"][0] for c in bed.calls()] == ["join", "reset"]
    assert bed.emu.get("nodes", "worker3") is None


def test_without_kubeadm_the_driver_says_so_in_one_line(dv: Any, bed: Bed, dv_state: Any) -> None:
    dv_state.config({"k8s": {"kubeadm": str(bed.tmp / "nowhere" / "kubeadm"),
                             "kubelet_conf": str(bed.kubelet_conf)}})
    res = dv(*bed.argv("--yes"), env=bed.env)
    assert res.code == 3 and "kubeadm is not installed on this node" in one_error(res.stderr), res


def test_bad_join_input_is_one_sentence(dv: Any, bed: Bed) -> None:
    f = bed.tmp / "bad.token"
    f.write_text("not-a-token")
    f.chmod(0o600)
    res = dv(*bed.argv("--yes", token_file=f), env=bed.env)
    assert res.code == 2 and "not a bootstrap token" in one_error(res.stderr)
    assert "not-a-token" not in res.stderr
    res = dv(*bed.argv("--labels", "node-role.kubernetes.io/worker=", "--yes"), env=bed.env)
    assert res.code == 2 and "NodeRestriction" in one_error(res.stderr)
    res = dv(*bed.argv("--yes", ca_hash="md5:abc"), env=bed.env)
    assert res.code == 2


def test_first_boot_joins_the_cluster_from_the_config(dv: Any, bed: Bed, dv_state: Any) -> None:
    """`[firstboot.modules."06-k8s"]` runs k8s.join with the token from its file."""
    dv_state.config({
        "k8s": {"kubeadm": str(bed.kubeadm), "kubelet_conf": str(bed.kubelet_conf)},
        "firstboot": {"root": str(bed.tmp / "root"), "roles": ["k8s"], "skip": ["01-network"],
                      "report": str(bed.tmp / "firstboot-report.json"),
                      "modules": {"06-k8s": {"action": "k8s.join", "roles": ["k8s"], "params": {
                          "api": bed.api, "token_file": str(bed.token_file),
                          "ca_hash": bed.ca_hash, "node_name": "worker3",
                          "labels": ["debvisor.io/role=hypervisor"]}}}}})
    res = dv("--json", "firstboot", "run", env=bed.env)
    assert res.code == 0, res
    (mod,) = [m for m in res.json["modules"] if m["name"] == "06-k8s"]
    assert mod["status"] == "ok" and mod["result"].startswith("k8s.join: succeeded"), mod
    node = bed.emu.get("nodes", "worker3")
    assert node["metadata"]["labels"]["debvisor.io/role"] == "hypervisor"
    report = (bed.tmp / "firstboot-report.json").read_text()
    assert TOKEN_SECRET not in report and TOKEN_SECRET not in res.stdout + res.stderr


def test_rollback_with_the_api_gone_still_resets_and_says_what_is_left(dv: Any, bed: Bed) -> None:
    assert dv(*bed.argv("--yes"), env=bed.env).code == 0
    bed.emu.stop()  # the control plane is unreachable when the join is undone
    res = dv("k8s", "join", "--rollback", "--yes", env=bed.env)
    assert res.code == 5, res
    assert "kubeadm reset done, but node worker3 could not be deleted" in res.stderr
    assert "cannot reach the Kubernetes API" in res.stderr and "Traceback" not in res.stderr
    assert bed.calls()[-1]["argv"] == ["reset", "--force"] and not bed.kubelet_conf.exists()
