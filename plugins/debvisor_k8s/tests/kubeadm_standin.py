"""Stands in for ``kubeadm`` in the join tests: kubeadm cannot be installed on the test
machine (no package in Debian 12, no internet). It does what the join tests can check of the
real one's effect, and records how it was called:

- ``version -o short``: $KUBEADM_STANDIN_VERSION (default v1.30.2);
- ``join --config FILE``: checks the JoinConfiguration (apiVersion for that version,
  endpoint, token, CA hash, node registration), records argv, the file's mode and its
  content in $KUBEADM_STANDIN_LOG, registers the Node (labels from node-labels, taints)
  through the API with the admin kubeconfig in $KUBEADM_STANDIN_ADMIN (what the kubelet's
  TLS bootstrap would do) and writes the kubelet's kubeconfig to $KUBEADM_STANDIN_KUBELET_CONF;
  $KUBEADM_STANDIN_FAIL makes it fail like a failed join (exit 1, an error on stderr);
- ``reset --force``: removes the kubelet's kubeconfig.
"""

from __future__ import annotations

import json
import os
import ssl
import stat
import sys
import urllib.request
from pathlib import Path
from typing import Any

import yaml


def _log(entry: dict[str, Any]) -> None:
    with open(os.environ["KUBEADM_STANDIN_LOG"], "a") as f:
        f.write(json.dumps(entry) + "\n")


def _register(conf: dict[str, Any]) -> None:
    admin = yaml.safe_load(Path(os.environ["KUBEADM_STANDIN_ADMIN"]).read_text())
    server = admin["clusters"][0]["cluster"]["server"]
    ca = admin["clusters"][0]["cluster"]["certificate-authority-data"]
    import base64

    ctx = ssl.create_default_context(cadata=base64.b64decode(ca).decode())
    reg = conf["nodeRegistration"]
    extra = reg.get("kubeletExtraArgs") or {}
    if isinstance(extra, list):
        extra = {e["name"]: e["value"] for e in extra}
    labels = dict(x.split("=", 1) for x in extra.get("node-labels", "").split(",") if x)
    labels["kubernetes.io/hostname"] = reg["name"]
    body = {"apiVersion": "v1", "kind": "Node",
            "metadata": {"name": reg["name"], "labels": labels},
            "spec": {"taints": reg.get("taints") or None}}
    req = urllib.request.Request(f"{server}/api/v1/nodes", data=json.dumps(body).encode(),
                                 method="POST", headers={
                                     "Content-Type": "application/json",
                                     "Authorization": f"Bearer {admin['users'][0]['user']['token']}"})
    with urllib.request.urlopen(req, context=ctx, timeout=30) as resp:
        resp.read()
    out = Path(os.environ["KUBEADM_STANDIN_KUBELET_CONF"])
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(yaml.safe_dump(admin))


def main(argv: list[str]) -> int:
    if argv[:1] == ["version"]:
        print(os.environ.get("KUBEADM_STANDIN_VERSION", "v1.30.2"))
        return 0
    if argv[:2] == ["join", "--config"] and len(argv) == 3:
        path = Path(argv[2])
        mode = stat.S_IMODE(path.stat().st_mode)
        conf = yaml.safe_load(path.read_text())
        _log({"argv": argv, "mode": mode, "config": conf})
        version = os.environ.get("KUBEADM_STANDIN_VERSION", "v1.30.2")
        want = "kubeadm.k8s.io/v1beta4" if tuple(map(int, version[1:].split(".")[:2])) >= (1, 31) \
            else "kubeadm.k8s.io/v1beta3"
        if conf.get("apiVersion") != want or conf.get("kind") != "JoinConfiguration":
            print(f"error: kubeadm {version} needs a {want} JoinConfiguration", file=sys.stderr)
            return 1
        if os.environ.get("KUBEADM_STANDIN_FAIL"):
            print("error execution phase kubelet-start: timed out waiting for the condition",
                  file=sys.stderr)
            return 1
        _register(conf)
        return 0
    if argv == ["reset", "--force"]:
        _log({"argv": argv})
        Path(os.environ["KUBEADM_STANDIN_KUBELET_CONF"]).unlink(missing_ok=True)
        return 0
    print(f"kubeadm stand-in: unexpected arguments {argv}", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))


# -- for the tests that use it ---------------------------------------------------------------
def install(directory: Path) -> Path:
    """A ``kubeadm`` executable in ``directory`` that runs this stand-in."""
    directory.mkdir(parents=True, exist_ok=True)
    exe = directory / "kubeadm"
    exe.write_text(f"#!/bin/sh\nexec {sys.executable} {Path(__file__).resolve()} \"$@\"\n")
    exe.chmod(0o755)
    return exe


class Kubelet:
    """While entered: marks node NAME Ready in the emulator once it is registered, as its
    kubelet's first status update would."""

    def __init__(self, emu: Any, name: str) -> None:
        import threading

        self.emu, self.name = emu, name
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self.stop.wait(0.2):
            node = self.emu.get("nodes", self.name)
            if node is not None and not (node.get("status") or {}).get("conditions"):
                self.emu.set_status("nodes", self.name, None, self.emu.node(self.name)["status"])

    def __enter__(self) -> Kubelet:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join()
