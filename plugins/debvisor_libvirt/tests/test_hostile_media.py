"""`hv convert` and `hv iso build` against hostile input (security review 1: H2, M4, M5, M9, L6,
L8, L10): one test per finding, each failing on the tree the review read."""

from __future__ import annotations

import json
import os
import stat
import subprocess
from pathlib import Path

import pytest

MiB = 1 << 20
SECRET = b"ROOT-ONLY-SECRET"
TOKEN = "abcdef.0123456789abcdef"
CA_HASH = "sha256:" + "0" * 64


@pytest.fixture(autouse=True)
def _umask_022():
    """Outputs must be owner-only whatever the umask: test with the usual permissive one."""
    old = os.umask(0o022)
    yield
    os.umask(old)


def secret_file(d: Path) -> Path:
    """A 1 MiB owner-only raw file starting with SECRET (what a hostile image points at)."""
    p = d / "secret.raw"
    with open(p, "wb") as f:
        f.write(SECRET)
        f.truncate(MiB)
    p.chmod(0o600)
    return p


def qemu_img(*args: str | Path) -> None:
    subprocess.run(["qemu-img", *map(str, args)], check=True, capture_output=True)


def files_in(d: Path) -> set[str]:
    return {p.name for p in d.iterdir()}


def mode(p: Path) -> int:
    return stat.S_IMODE(os.lstat(p).st_mode)


def errors(res) -> list[str]:
    return [line for line in res.stderr.splitlines() if line.startswith("[ERROR]")]


def no_secret_anywhere(d: Path) -> None:
    for p in d.iterdir():
        if p.is_file() and p.name != "secret.raw":
            assert SECRET not in p.read_bytes(), p


# -- H2: backing files, data files, pseudo-protocols, probing ---------------------------------

def test_backing_file_is_refused_and_nothing_is_written(dv, tmp_path: Path) -> None:
    sec = secret_file(tmp_path)
    out = tmp_path / "out"
    out.mkdir()
    qemu_img("create", "-q", "-f", "qcow2", "-b", sec, "-F", "raw", tmp_path / "tenant.qcow2", "1M")
    res = dv("hv", "convert", tmp_path / "tenant.qcow2", out / "out.raw", "-O", "raw",
             "--checksum", "sha256-tree")
    assert res.code == 2, res
    assert len(errors(res)) == 1 and "backing file" in res.stderr and str(sec) in res.stderr
    assert "--allow-backing" in res.stderr and "Traceback" not in res.stderr
    assert files_in(out) == set()  # no result, no partial, no checkpoint, no checksum file


def test_external_data_file_is_refused(dv, tmp_path: Path) -> None:
    qemu_img("create", "-q", "-f", "qcow2", "-o", f"data_file={tmp_path / 'data.raw'}",
             tmp_path / "d.qcow2", "1M")
    res = dv("hv", "convert", tmp_path / "d.qcow2", tmp_path / "o.raw", "-O", "raw")
    assert res.code == 2, res
    assert len(errors(res)) == 1 and "external data file" in res.stderr
    assert not (tmp_path / "o.raw").exists()


def test_vmdk_extent_in_another_file_is_refused(dv, tmp_path: Path) -> None:
    sec = secret_file(tmp_path)
    vmdk = tmp_path / "flat.vmdk"  # a descriptor naming any host file as its data
    vmdk.write_text('# Disk DescriptorFile\nversion=1\nCID=fffffffe\nparentCID=ffffffff\n'
                    f'createType="monolithicFlat"\nRW 2048 FLAT "{sec}" 0\n')
    res = dv("hv", "convert", vmdk, tmp_path / "o.raw", "-O", "raw")
    assert res.code == 2, res
    assert len(errors(res)) == 1 and "extent file" in res.stderr and "--allow-backing" in res.stderr
    assert not (tmp_path / "o.raw").exists()


def test_allow_backing_converts_and_shows_the_chain(dv, tmp_path: Path) -> None:
    base = secret_file(tmp_path)
    mid = tmp_path / "mid.qcow2"
    top = tmp_path / "top.qcow2"
    qemu_img("create", "-q", "-f", "qcow2", "-b", base, "-F", "raw", mid, "1M")
    qemu_img("create", "-q", "-f", "qcow2", "-b", mid, "-F", "qcow2", top, "1M")
    dry = dv("hv", "convert", top, tmp_path / "o.raw", "-O", "raw", "--allow-backing", "--dry-run",
             "--json")
    assert dry.code == 0, dry
    assert [c["file"] for c in dry.json["plan"]["chain"]] == [str(mid), str(base)]
    res = dv("hv", "convert", top, tmp_path / "o.raw", "-O", "raw", "--allow-backing")
    assert res.code == 0, res
    assert str(mid) in res.stderr and str(base) in res.stderr  # the operator sees what is read
    assert (tmp_path / "o.raw").read_bytes()[:len(SECRET)] == SECRET


@pytest.mark.parametrize("allow", [False, True])
def test_json_pseudo_protocol_backing_is_refused(dv, tmp_path: Path, allow: bool) -> None:
    sec = secret_file(tmp_path)
    spec = json.dumps({"driver": "raw", "file": {"driver": "file", "filename": str(sec)}})
    img = tmp_path / "j.qcow2"
    qemu_img("create", "-q", "-f", "qcow2", "-b", f"json:{spec}", "-F", "raw", img, "1M")
    res = dv("hv", "convert", img, tmp_path / "o.raw", "-O", "raw",
             *(["--allow-backing"] if allow else []))
    assert res.code == 2, res
    assert len(errors(res)) == 1 and "pseudo-protocol" in res.stderr and "json:" in res.stderr
    assert str(sec) not in res.stderr
    assert files_in(tmp_path) == {"secret.raw", "j.qcow2", "dvstate"}


def hostile_raw(d: Path, name: str, sec: Path) -> Path:
    """A raw disk whose guest wrote a qcow2 header (backing: the host's secret) at sector 0."""
    q = d / "hdr.qcow2"
    qemu_img("create", "-q", "-f", "qcow2", "-b", sec, "-F", "raw", q, "1M")
    raw = d / name
    with open(raw, "wb") as f:
        f.write(q.read_bytes())
        f.truncate(2 * MiB)
    q.unlink()
    return raw


@pytest.mark.parametrize("name,opts", [("guest.raw", []), ("guest.img", ["-f", "raw"])])
def test_raw_disk_with_a_qcow2_header_is_converted_as_raw(dv, tmp_path: Path, name: str,
                                                          opts: list[str]) -> None:
    sec = secret_file(tmp_path)
    raw = hostile_raw(tmp_path, name, sec)
    out = tmp_path / "out.raw"
    res = dv("hv", "convert", raw, out, "-O", "raw", *opts, "--json")
    assert res.code == 0, res
    assert res.json["source_format"] == "raw"
    assert "[WARN" in res.stderr and "qcow2 header" in res.stderr
    assert out.read_bytes() == raw.read_bytes()  # the guest's bytes, not the host's file
    no_secret_anywhere(tmp_path)


# -- L8: user paths never parse as qemu options --------------------------------------------

def test_source_and_destination_named_like_options(dv, tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    data = os.urandom(MiB)
    Path("-h.raw").write_bytes(data)
    res = dv("hv", "convert", "-O", "qcow2", "--", "-h.raw", "-U.qcow2")
    assert res.code == 0, res
    assert "Traceback" not in res.stderr and "internal error" not in res.stderr
    back = tmp_path / "back.raw"
    qemu_img("convert", "-f", "qcow2", "-O", "raw", "./-U.qcow2", back)
    assert back.read_bytes() == data
    assert Path("-U.qcow2.blake3").is_file()


# -- M5 / L6: modes, symlinks ----------------------------------------------------------------

def small_raw(p: Path) -> Path:
    with open(p, "wb") as f:
        f.write(os.urandom(64 * 1024))
        f.truncate(MiB)
    return p


def test_convert_outputs_are_owner_only_unless_mode(dv, tmp_path: Path) -> None:
    src = small_raw(tmp_path / "src.raw")
    res = dv("hv", "convert", src, tmp_path / "a.qcow2", "-O", "qcow2")
    assert res.code == 0, res
    assert mode(tmp_path / "a.qcow2") == 0o600 and mode(tmp_path / "a.qcow2.blake3") == 0o600
    res = dv("hv", "convert", src, tmp_path / "b.qcow2", "-O", "qcow2", "--mode", "0644")
    assert res.code == 0, res
    assert mode(tmp_path / "b.qcow2") == 0o644 and mode(tmp_path / "b.qcow2.blake3") == 0o644
    res = dv("hv", "convert", src, tmp_path / "c.qcow2", "-O", "qcow2", "--mode", "0666")
    assert res.code == 2 and len(errors(res)) == 1 and "write" in res.stderr, res
    assert not (tmp_path / "c.qcow2").exists()


def test_iso_is_owner_only_unless_mode(dv, tmp_path: Path) -> None:
    res = dv("hv", "iso", "build", "-o", tmp_path / "a.iso", "--instance-id", "i-1")
    assert res.code == 0, res
    assert mode(tmp_path / "a.iso") == 0o600
    res = dv("hv", "iso", "build", "-o", tmp_path / "b.iso", "--instance-id", "i-1", "--mode", "644")
    assert res.code == 0, res
    assert mode(tmp_path / "b.iso") == 0o644


def test_symlinks_at_the_outputs_are_not_followed(dv, tmp_path: Path) -> None:
    src = small_raw(tmp_path / "src.raw")
    victim = tmp_path / "victim"
    victim.write_text("VICTIM\n")
    dst = tmp_path / "out.qcow2"
    (tmp_path / "out.qcow2.blake3").symlink_to(victim)
    (tmp_path / ".out.qcow2.partial").symlink_to(victim)
    res = dv("hv", "convert", src, dst, "-O", "qcow2")
    assert res.code == 0, res
    assert victim.read_text() == "VICTIM\n" and not (tmp_path / ".out.qcow2.partial").exists()
    assert not (tmp_path / "out.qcow2.blake3").is_symlink() and mode(tmp_path / "out.qcow2.blake3") == 0o600
    # a symlink at DST itself counts as an existing file; with --force it is replaced
    dst2 = tmp_path / "out2.qcow2"
    dst2.symlink_to(tmp_path / "nowhere")
    res = dv("hv", "convert", src, dst2, "-O", "qcow2")
    assert res.code == 2 and "already exists" in res.stderr, res
    res = dv("hv", "convert", src, dst2, "-O", "qcow2", "--force")
    assert res.code == 0, res
    assert not dst2.is_symlink() and not (tmp_path / "nowhere").exists()
    iso = tmp_path / "seed.iso"
    iso.symlink_to(victim)
    res = dv("hv", "iso", "build", "-o", iso, "--instance-id", "i-1", "--force")
    assert res.code == 0, res
    assert victim.read_text() == "VICTIM\n" and not iso.is_symlink() and mode(iso) == 0o600


# -- M9: batch rows stay inside their directories --------------------------------------------

@pytest.mark.parametrize("column,value", [
    ("output", "../escape.iso"),
    ("output", "ABS/escape.iso"),
    ("user-data", "../outside.yaml"),
    ("user-data", "ABS/outside.yaml"),
    ("ssh-key", "../outside.pub"),
])
def test_batch_rows_cannot_leave_their_directories(dv, tmp_path: Path, column: str, value: str) -> None:
    batch_dir = tmp_path / "batch"
    out = tmp_path / "batch" / "out"
    out.mkdir(parents=True)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (tmp_path / "outside.yaml").write_text("#cloud-config\nhostname: stolen\n")
    (elsewhere / "outside.yaml").write_text("#cloud-config\nhostname: stolen\n")
    (tmp_path / "outside.pub").write_text("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqq a@b\n")
    value = value.replace("ABS", str(elsewhere))
    (batch_dir / "vms.csv").write_text(f"hostname,instance-id,{column}\n"
                                       f"ok1,i-ok1,\n"
                                       f"bad2,i-bad2,{value}\n")
    res = dv("hv", "iso", "build", "--batch", batch_dir / "vms.csv", "-o", out)
    assert res.code == 2, res
    assert len(errors(res)) == 1 and "vms.csv row 2" in res.stderr and column in res.stderr
    assert files_in(out) == set() and files_in(elsewhere) == {"outside.yaml"}
    assert not (batch_dir / "escape.iso").exists()


# -- M4 / L10: secrets and template variables -------------------------------------------------

def k8s(*more: str) -> list[str]:
    return ["--template", "k8s-worker", "--hostname", "w1", "--set", "join_endpoint=10.0.0.1:6443",
            "--set", f"ca_cert_hash={CA_HASH}", *more]


def test_secret_variable_only_from_a_file_or_stdin(dv, tmp_path: Path) -> None:
    from debvisor_libvirt.media.iso import read_iso

    state = Path(os.environ["DEBVISOR_STATE_DIR"])
    res = dv("hv", "iso", "build", "-o", tmp_path / "a.iso", *k8s("--set", f"join_token={TOKEN}"))
    assert res.code == 2, res
    assert len(errors(res)) == 1 and "--set-file join_token=" in res.stderr
    assert TOKEN not in res.stderr and TOKEN not in res.stdout and not (tmp_path / "a.iso").exists()

    token = tmp_path / "token"
    token.write_text(TOKEN + "\n")
    token.chmod(0o644)
    res = dv("hv", "iso", "build", "-o", tmp_path / "b.iso", *k8s("--set-file", f"join_token={token}"))
    assert res.code == 2 and "chmod 600" in res.stderr and not (tmp_path / "b.iso").exists(), res

    token.chmod(0o600)
    res = dv("hv", "iso", "build", "-o", tmp_path / "c.iso", *k8s("--set-file", f"join_token={token}"))
    assert res.code == 0, res
    res = dv("hv", "iso", "build", "-o", tmp_path / "d.iso", *k8s("--set-file", "join_token=-"),
             input=TOKEN + "\n")
    assert res.code == 0, res
    for iso in ("c.iso", "d.iso"):
        ud = next(f["data"] for f in read_iso(tmp_path / iso)["files"] if f["name"] == "user-data")
        assert TOKEN.encode() + b"\n" in ud  # exactly the token: the file's newline is dropped
    audit = (state / "log" / "audit.jsonl").read_text()
    assert audit.count('"iso-build"') == 2 and TOKEN not in audit


def test_secret_pattern_errors_do_not_echo_the_value(dv, tmp_path: Path) -> None:
    token = tmp_path / "token"
    token.write_text("not a kubeadm token\n")
    token.chmod(0o600)
    res = dv("hv", "iso", "build", "-o", tmp_path / "a.iso", *k8s("--set-file", f"join_token={token}"))
    assert res.code == 2 and "join_token" in res.stderr and "not a kubeadm" not in res.stderr, res


@pytest.mark.parametrize("template,key,value", [
    ("ceph-osd-node", "cephadm_pubkey",
     "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqq ceph\nssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIEVIL evil"),
    ("ceph-osd-node", "cephadm_pubkey", "not a key"),
    ("debian-server", "admin_user", "root\nx"),
    ("debian-server", "admin_user", "Bad User"),
    ("k8s-worker", "join_endpoint", "10.0.0.1:6443 --ignore-preflight-errors=all"),
    ("k8s-worker", "ca_cert_hash", "sha256:00"),
])
def test_template_variables_have_patterns(dv, tmp_path: Path, template: str, key: str, value: str) -> None:
    good = {"ceph-osd-node": {"cephadm_pubkey": "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqq ceph"},
            "debian-server": {}, "k8s-worker": {"join_endpoint": "10.0.0.1:6443", "ca_cert_hash": CA_HASH}}
    values = {**good[template], key: value}
    sets = [a for k, v in values.items() for a in ("--set", f"{k}={v}")]
    if template == "k8s-worker":
        token = tmp_path / "token"
        token.write_text(TOKEN)
        token.chmod(0o600)
        sets += ["--set-file", f"join_token={token}"]
    res = dv("hv", "iso", "build", "-o", tmp_path / "x.iso", "--template", template, "--hostname", "h1",
             *sets)
    assert res.code == 2, res
    assert len(errors(res)) == 1 and key in res.stderr and "does not match" in res.stderr
    assert not (tmp_path / "x.iso").exists()
    # the same with a good value is accepted
    sets = [a for k, v in good[template].items() for a in ("--set", f"{k}={v}")] + sets[2 * len(values):]
    res = dv("hv", "iso", "build", "-o", tmp_path / "x.iso", "--template", template, "--hostname", "h1",
             *sets)
    assert res.code == 0, res


def test_schema_errors_do_not_echo_values(dv, tmp_path: Path) -> None:
    from debvisor_libvirt.media import validate

    assert os.path.isfile(validate.schema_path()), "Debian's cloud-init package is needed here"
    ud = tmp_path / "ud"
    ud.write_text("#cloud-config\npassword: ['SECRET-PW-4711']\nchpasswd: {expire: 'SECRET-EXP-4711'}\n")
    res = dv("hv", "iso", "build", "-o", tmp_path / "a.iso", "--user-data", ud, "--instance-id", "i-1",
             "--json")
    assert res.code == 2, res
    assert "password" in res.stderr and "must be a string" in res.stderr
    assert "SECRET" not in res.stderr and "SECRET" not in res.stdout
    assert not (tmp_path / "a.iso").exists()
