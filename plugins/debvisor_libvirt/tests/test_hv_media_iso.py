"""`debvisor hv iso`: seeds checked with tools nobody here wrote (isoinfo, xorriso)."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

pytestmark = pytest.mark.skipif(not (shutil.which("isoinfo") and shutil.which("xorriso")),
                                reason="isoinfo (genisoimage) and xorriso are needed to check ISOs")

USER_DATA = "#cloud-config\nhostname: web1\npackages: [vim]\nruncmd:\n  - [echo, hello]\n"
NET = "network:\n  version: 2\n  ethernets:\n    eth0:\n      addresses: [192.0.2.10/24]\n"


def isoinfo_d(iso: Path) -> str:
    return subprocess.run(["isoinfo", "-d", "-i", str(iso)], capture_output=True, text=True,
                          check=True).stdout


def xorriso_ls(iso: Path) -> list[str]:
    out = subprocess.run(["xorriso", "-indev", str(iso), "-ls"], capture_output=True, text=True,
                         check=True).stdout
    return sorted(line.strip().strip("'") for line in out.splitlines() if line.strip())


def extract(iso: Path, name: str, dest: Path) -> bytes:
    target = dest / f"x-{name}"
    subprocess.run(["xorriso", "-osirrox", "on", "-indev", str(iso), "-extract", f"/{name}", str(target)],
                   capture_output=True, check=True)
    return target.read_bytes()


def test_build_is_a_nocloud_seed_with_identical_bytes(dv, tmp_path: Path) -> None:
    ud = tmp_path / "ud.yaml"
    ud.write_text(USER_DATA)
    net = tmp_path / "net.yaml"
    net.write_text(NET)
    vd = tmp_path / "vd.sh"
    vd.write_text("#!/bin/sh\necho vendor\n")
    iso = tmp_path / "seed.iso"
    res = dv("hv", "iso", "build", "-o", iso, "--user-data", ud, "--hostname", "web1",
             "--instance-id", "i-1", "--network-config", net, "--vendor-data", vd, "--json")
    assert res.code == 0, res
    assert {f["name"] for f in res.json["isos"][0]["files"]} == {"user-data", "meta-data", "network-config",
                                                                  "vendor-data"}
    info = isoinfo_d(iso)
    assert "Volume id: cidata" in info
    assert "Joliet" in info and "Rock Ridge signatures" in info
    assert xorriso_ls(iso) == ["meta-data", "network-config", "user-data", "vendor-data"]
    assert extract(iso, "user-data", tmp_path) == ud.read_bytes()
    assert extract(iso, "network-config", tmp_path) == net.read_bytes()
    assert extract(iso, "vendor-data", tmp_path) == vd.read_bytes()
    meta = extract(iso, "meta-data", tmp_path).decode()
    assert "instance-id: i-1" in meta and "local-hostname: web1" in meta
    # the audit log records the state change
    audit = Path(os.environ["DEBVISOR_STATE_DIR"], "log", "audit.jsonl").read_text()
    assert '"action":"iso-build"' in audit and str(iso) in audit

    show = dv("hv", "iso", "show", iso, "--json")
    assert show.code == 0, show
    assert show.json["label"] == "cidata" and show.json["rock_ridge"] and show.json["joliet"]
    kinds = {f["name"]: f.get("kind") for f in show.json["files"]}
    assert kinds["user-data"] == "cloud-config" and kinds["vendor-data"] == "script"


def test_dry_run_and_existing_output(dv, tmp_path: Path) -> None:
    iso = tmp_path / "seed.iso"
    res = dv("hv", "iso", "build", "-o", iso, "--instance-id", "a", "--dry-run")
    assert res.code == 0, res
    assert "would write" in res.stdout and not iso.exists()
    assert dv("hv", "iso", "build", "-o", iso, "--instance-id", "a").code == 0
    before = iso.read_bytes()
    res = dv("hv", "iso", "build", "-o", iso, "--instance-id", "b")
    assert res.code == 2 and "--force" in res.stderr
    assert iso.read_bytes() == before
    assert dv("hv", "iso", "build", "-o", iso, "--instance-id", "b", "--force").code == 0
    assert iso.read_bytes() != before
    assert not list(tmp_path.glob(".*partial"))


def test_output_that_is_a_directory_is_one_error(dv, tmp_path: Path) -> None:
    out = tmp_path / "seeds"
    out.mkdir()
    for force in ([], ["--force"]):
        res = dv("hv", "iso", "build", "-o", out, "--instance-id", "a", *force)
        assert res.code == 2, res
        assert res.stderr.strip().splitlines() == [
            f"[ERROR] -o {out} is a directory: give the ISO file name, e.g. {out}/seed.iso"]
        assert list(out.iterdir()) == []


def test_template_and_ssh_key(dv, tmp_path: Path) -> None:
    key = tmp_path / "id.pub"
    key.write_text("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl a@b\n")
    iso = tmp_path / "w1.iso"
    token = tmp_path / "token"
    token.write_text("abcdef.0123456789abcdef\n")
    token.chmod(0o600)
    res = dv("hv", "iso", "build", "-o", iso, "--template", "k8s-worker", "--hostname", "w1",
             "--set", "join_endpoint=10.0.0.1:6443", "--set-file", f"join_token={token}",
             "--set", "ca_cert_hash=sha256:" + "0" * 64, "--ssh-key", key, "--strict")
    assert res.code == 0, res
    ud = extract(iso, "user-data", tmp_path).decode()
    assert ud.startswith("#cloud-config\n") and "hostname: w1" in ud
    assert "abcdef.0123456789abcdef" in ud
    assert "x-template" not in ud and "${" not in ud
    assert "ssh-ed25519 AAAAC3" in extract(iso, "meta-data", tmp_path).decode()
    res = dv("hv", "iso", "build", "-o", tmp_path / "x.iso", "--template", "k8s-worker", "--hostname", "w1")
    assert res.code == 2 and "--set join_endpoint" in res.stderr
    res = dv("hv", "iso", "build", "-o", tmp_path / "x.iso", "--template", "k8s-worker", "--hostname", "w1",
             "--set", "k8s_version=v1; rm -rf /", "--set", "join_endpoint=a:1", "--set-file",
             f"join_token={token}", "--set", "ca_cert_hash=c")
    assert res.code == 2 and "k8s_version" in res.stderr
    lst = dv("hv", "iso", "templates", "--json")
    assert {"debian-server", "k8s-worker", "ceph-osd-node"} <= {t["name"] for t in lst.json}


def test_batch_csv_and_yaml(dv, tmp_path: Path) -> None:
    (tmp_path / "ud.yaml").write_text(USER_DATA)
    (tmp_path / "vms.csv").write_text(
        "hostname,instance-id,user-data,template,set.admin_user\n"
        "a1,i-a1,ud.yaml,,\n"
        "a2,i-a2,,debian-server,ops\n")
    out = tmp_path / "out"
    out.mkdir()
    res = dv("hv", "iso", "build", "--batch", tmp_path / "vms.csv", "-o", out, "--json")
    assert res.code == 0, res
    assert sorted(p.name for p in out.iterdir()) == ["a1.iso", "a2.iso"]
    assert extract(out / "a1.iso", "user-data", tmp_path) == (tmp_path / "ud.yaml").read_bytes()
    assert "name: ops" in extract(out / "a2.iso", "user-data", tmp_path).decode()
    # one bad row: nothing is written at all
    (tmp_path / "vms.yaml").write_text("- {hostname: b1, instance-id: i-b1}\n"
                                       "- {hostname: b2, user-data: missing.yaml, instance-id: x}\n")
    res = dv("hv", "iso", "build", "--batch", tmp_path / "vms.yaml", "-o", out)
    assert res.code == 2 and "missing.yaml" in res.stderr
    assert not (out / "b1.iso").exists()


def test_size_limits(dv, tmp_path: Path) -> None:
    ud = tmp_path / "big.yaml"
    ud.write_text("#cloud-config\nwrite_files:\n  - path: /x\n    content: '" + "a" * 3000 + "'\n")
    res = dv("hv", "iso", "build", "-o", tmp_path / "a.iso", "--user-data", ud, "--instance-id", "a",
             "--warn-size", "2K")
    assert res.code == 0 and "above the warning size" in res.stderr
    huge = tmp_path / "huge.sh"
    huge.write_bytes(b"#!/bin/sh\n" + b"# padding\n" * (17 * 1024 * 1024 // 10))
    res = dv("hv", "iso", "build", "-o", tmp_path / "b.iso", "--user-data", huge, "--instance-id", "a")
    assert res.code == 2 and "hard limit" in res.stderr
    assert not (tmp_path / "b.iso").exists()


def test_show_rejects_non_iso(dv, tmp_path: Path) -> None:
    f = tmp_path / "x.iso"
    f.write_bytes(b"not an iso" * 100)
    res = dv("hv", "iso", "show", f)
    assert res.code == 2 and "not a readable ISO" in res.stderr
