"""Hostile input, crashes and concurrency against the hv steps (security review 1: H8, M1,
M2, M4, M6, M7, L4, L11, L12), on the lab's two libvirtd nodes.

One guest (qcow2 disk for internal snapshots, password-protected VNC for tickets) is shared
by the module; each test has its own DebVisor state directory.
"""

from __future__ import annotations

import base64
import calendar
import hashlib
import hmac
import json
import os
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from debvisor_libvirt import lab

VM = "hvhostile"
pytestmark = [pytest.mark.lab, pytest.mark.root]
META_NS = "https://debvisor.org/xmlns/hv/1"


@pytest.fixture(scope="module")
def guest(hv_lab: Any) -> Iterator[Path]:
    hv_lab.remove(VM)
    yield hv_lab.guest(VM, "node1", disk=True, vnc_password="initial")
    hv_lab.remove(VM)


def _dom(hv_env: Any, name: str = VM, node: str = "node1") -> Any:
    return hv_env.conn(node).lookupByName(name)


def _snapshots(hv_env: Any) -> dict[str, str]:
    """Snapshot name -> description, straight from libvirt."""
    out = {}
    for s in _dom(hv_env).listAllSnapshots(0):
        out[s.getName()] = ET.fromstring(s.getXMLDesc(0)).findtext("description") or ""
    return out


def _nft(hv_env: Any, *args: str, node: str = "node1") -> subprocess.CompletedProcess[str]:
    ns = hv_env.config["hv"]["nodes"][node]["netns"]
    return subprocess.run(["ip", "netns", "exec", ns, "nft", *args], capture_output=True,
                          text=True, timeout=30)


def _meta(hv_env: Any) -> dict[str, Any] | None:
    from debvisor_libvirt.domains import read_meta

    return read_meta(_dom(hv_env), inactive=True)


def _audit_text(dv_state: Any) -> str:
    path = dv_state.path / "log" / "audit.jsonl"
    return path.read_text() if path.exists() else ""


# --- H8: a failed create never deletes a snapshot it did not create ---------------------


def test_h8_interrupted_create_never_deletes_a_snapshot_it_did_not_create(
        dv: Any, hv_env: Any, guest: Path) -> None:
    killed = dv("hv", "snapshot", VM, "create", "foo", "--yes",
                env={"DEBVISOR_FAULTS": "CreateSnapshot:kill-before"})
    assert killed.code == -9, killed  # SIGKILLed after journalling its intent
    # meanwhile someone else takes a snapshot of that name (virsh, another tool)
    _dom(hv_env).snapshotCreateXML(
        "<domainsnapshot><name>foo</name><description>theirs</description></domainsnapshot>", 0)
    ops = dv("--json", "ops", "list")
    op_id = next(o["id"] for o in ops.json if o["kind"] == "hv.snapshot")
    rb = dv("ops", "rollback", op_id, "--yes")
    assert rb.code == 0, rb
    try:
        assert _snapshots(hv_env).get("foo") == "theirs"  # still there: not ours to delete
    finally:
        for name in _snapshots(hv_env):
            _dom(hv_env).snapshotLookupByName(name, 0).delete(0)


def test_h8_default_snapshot_names_never_collide() -> None:
    from debvisor_libvirt.snapshots import check_snapshot_name, default_name

    names = {default_name() for _ in range(50)}  # all within the same second or two
    assert len(names) == 50
    for n in names:
        assert check_snapshot_name(n) == n


# --- M6: undos that cannot restore report rollback-incomplete ---------------------------


def test_m6_rollback_of_a_snapshot_delete_reports_incomplete(dv: Any, hv_env: Any,
                                                              guest: Path) -> None:
    assert dv("hv", "snapshot", VM, "create", "gone", "--yes").code == 0
    deleted = dv("--json", "hv", "snapshot", VM, "delete", "gone", "--yes")
    assert deleted.code == 0, deleted
    rb = dv("ops", "rollback", deleted.json["id"], "--yes")
    assert rb.code == 5, rb  # not "rolled back": nothing was restored
    assert "snapshot 'gone' of hvhostile was deleted and cannot be restored" in rb.stderr
    assert "gone" not in _snapshots(hv_env)


def test_m6_nft_failure_in_undo_reports_incomplete(dv: Any, dv_state: Any, hv_env: Any,
                                                   guest: Path, tmp_path: Path) -> None:
    dv_state.config({"hv": {"vnc": {"port_range": [5960, 5969], "firewall": True}}},
                    base=hv_env.config_path)
    _nft(hv_env, "delete", "table", "inet", "debvisor")  # no rule left by an earlier run
    tgt = dv("--json", "hv", "vnc", "target", VM, "--listen", "127.0.0.1", "--port", "auto",
             "--yes")
    assert tgt.code == 0, tgt
    assert f'comment "hv-vnc-{VM}"' in _nft(hv_env, "list", "chain", "inet", "debvisor", "vnc").stdout
    fake = tmp_path / "bin"
    fake.mkdir()
    (fake / "nft").write_text("#!/bin/sh\necho 'nft: simulated failure' >&2\nexit 1\n")
    (fake / "nft").chmod(0o755)
    broken = dv("ops", "rollback", tgt.json["id"], "--yes",
                env={"PATH": f"{fake}:{os.environ['PATH']}"})
    assert broken.code == 5, broken  # the port stays open: never "rolled back"
    assert "simulated failure" in broken.stderr
    assert f'comment "hv-vnc-{VM}"' in _nft(hv_env, "list", "chain", "inet", "debvisor", "vnc").stdout
    again = dv("ops", "rollback", tgt.json["id"], "--yes")  # nft works again: finish the undo
    assert again.code == 0, again
    assert f"hv-vnc-{VM}" not in _nft(hv_env, "list", "chain", "inet", "debvisor", "vnc").stdout


def test_m6_precreated_disk_that_cannot_be_deleted_reports_incomplete(
        dv: Any, hv_env: Any, unique: str) -> None:
    from debvisor_libvirt.nodes import lv

    disk = f"/var/lib/libvirt/images/{unique}.qcow2"
    on1, on2 = (lab.node_local_path(hv_env.dir, n, disk) for n in ("node1", "node2"))
    on1.parent.mkdir(parents=True, exist_ok=True)
    lab.make_disk(on1, 16)
    g = hv_env.config["hv"]["guest"]
    dom = hv_env.conn("node1").createXML(  # paused: it never migrates here
        lab.guest_xml(unique, kernel=g["kernel"], initrd=g["initrd"], disk=disk),
        lv().VIR_DOMAIN_START_PAUSED)
    try:
        killed = dv("hv", "migrate", unique, "node2", "--copy-storage", "--yes",
                    env={"DEBVISOR_FAULTS": "PrecreateDisks:kill-after"})
        assert killed.code == -9, killed
        assert on2.exists()  # the empty image it made on node2
        op_id = next(o["id"] for o in dv("--json", "ops", "list").json if o["kind"] == "hv.migrate")
        # M1: the target directory (its temporary pool) is locked, whatever the VM
        locks = dv("--json", "ops", "show", op_id).json["locks"]
        assert "hv.node.node2.storage./var/lib/libvirt/images" in locks, locks
        subprocess.run(["chattr", "+i", str(on2)], check=True)  # now it cannot be deleted
        stuck = dv("ops", "rollback", op_id, "--yes")
        assert stuck.code == 5, stuck  # not "rolled back": the image is still there
        assert f"cannot delete the disk images created for {unique} on node2" in stuck.stderr
        subprocess.run(["chattr", "-i", str(on2)], check=True)
        done = dv("ops", "rollback", op_id, "--yes")
        assert done.code == 0, done
        assert not on2.exists()
    finally:
        subprocess.run(["chattr", "-i", str(on2)], capture_output=True)
        dom.destroy()
        on1.unlink(missing_ok=True)
        on2.unlink(missing_ok=True)


# --- M7: vnc ensure keeps libvirt-provided names and metadata away from nft -------------


HOSTILE_NAME = 'ev"il;flush ruleset;#'


def _paused_vnc_guest(hv_env: Any, name: str, port: int, meta: str) -> Any:
    from debvisor_libvirt.nodes import lv

    libvirt = lv()
    g = hv_env.config["hv"]["guest"]
    xml = lab.guest_xml(name, kernel=g["kernel"], initrd=g["initrd"]).replace(
        '<graphics type="vnc" port="-1" autoport="yes">',
        f'<graphics type="vnc" port="{port}" autoport="no">')
    dom = hv_env.conn("node1").createXML(xml, libvirt.VIR_DOMAIN_START_PAUSED)
    dom.setMetadata(libvirt.VIR_DOMAIN_METADATA_ELEMENT, meta, "debvisor", META_NS,
                    libvirt.VIR_DOMAIN_AFFECT_LIVE)
    return dom


def test_m7_vnc_ensure_skips_hostile_names_and_metadata(dv: Any, dv_state: Any, hv_env: Any,
                                                        guest: Path, unique: str) -> None:
    dv_state.config({"hv": {"vnc": {"firewall": True}}}, base=hv_env.config_path)
    assert _nft(hv_env, "add", "table", "inet", "dvsentinel").returncode == 0
    doms = []
    try:
        doms.append(_paused_vnc_guest(  # a valid target, a name full of nft syntax
            hv_env, HOSTILE_NAME, 5991,
            '<vm registered="no"><vnc listen="127.0.0.1" port="5991"/></vm>'))
        doms.append(_paused_vnc_guest(  # a valid name, nft syntax in the metadata
            hv_env, unique, 5992,
            '<vm registered="no"><vnc listen="127.0.0.1" port="1; flush ruleset"/></vm>'))
        res = dv("--json", "hv", "vnc", "ensure")
        assert res.code == 1, res  # something could not be checked: not "ok"
        assert f"skipped the domain named {HOSTILE_NAME!r}: not a valid VM name" in res.stderr
        assert (f"{unique}: ignored its DebVisor VNC target {{'listen': '127.0.0.1', 'port': "
                "'1; flush ruleset'}") in res.stderr
        assert "Traceback" not in res.stderr
        assert {(s["name"], s["reason"]) for s in res.json["skipped"]} == {
            (HOSTILE_NAME, "bad name"), (unique, "bad metadata")}
        ruleset = _nft(hv_env, "list", "ruleset").stdout
        assert "table inet dvsentinel" in ruleset  # nothing was flushed
        assert "hv-vnc-ev" not in ruleset and f"hv-vnc-{unique}" not in ruleset
        assert "dport 1 " not in ruleset
    finally:
        for d in doms:
            d.destroy()
        _nft(hv_env, "delete", "table", "inet", "dvsentinel")


# --- M1: one lock name per VM; metadata undos restore only their own key -----------------


def test_m1_vnc_target_and_register_undo_only_their_own_metadata(dv: Any, hv_env: Any,
                                                                guest: Path) -> None:
    tgt = dv("--json", "hv", "vnc", "target", VM, "--listen", "127.0.0.1", "--port", "5970",
             "--yes")
    assert tgt.code == 0, tgt
    reg = dv("--json", "hv", "register", VM, "--owner", "ops", "--yes")
    assert reg.code == 0, reg
    meta = _meta(hv_env)
    assert meta is not None
    assert meta["registered"] and meta["owner"] == "ops"
    assert meta["vnc"] == {"listen": "127.0.0.1", "port": 5970}  # register kept the target
    assert dv("ops", "rollback", tgt.json["id"], "--yes").code == 0
    meta = _meta(hv_env)
    assert meta is not None and meta["registered"] and meta["owner"] == "ops"  # kept
    assert meta["vnc"] is None
    assert dv("ops", "rollback", reg.json["id"], "--yes").code == 0
    assert _meta(hv_env) is None
    shown = dv("--json", "ops", "show", tgt.json["id"])
    assert f"hv.vm.{VM}" in shown.json["locks"]  # the lock migrate/register/snapshot take


# --- M2 / M4: console tickets mean what they say -----------------------------------------


def _token(key: bytes, payload: dict[str, Any]) -> str:
    def b64(b: bytes) -> str:
        return base64.urlsafe_b64encode(b).rstrip(b"=").decode()

    body = b64(json.dumps(payload, separators=(",", ":"), sort_keys=True).encode())
    return f"dvt1.{body}.{b64(hmac.new(key, f'dvt1.{body}'.encode(), hashlib.sha256).digest())}"


def _live_graphics(hv_env: Any) -> ET.Element:
    from debvisor_libvirt.nodes import lv

    xml = _dom(hv_env).XMLDesc(lv().VIR_DOMAIN_XML_SECURE)
    g = ET.fromstring(xml).find("devices/graphics[@type='vnc']")
    assert g is not None
    return g


def _shared_tickets(dv_state: Any, hv_env: Any, tmp_path: Path) -> tuple[bytes, Path]:
    key = tmp_path / "ticket.key"
    key.write_text(os.urandom(32).hex() + "\n")
    key.chmod(0o600)
    ledger = tmp_path / "ledger"
    ledger.mkdir()
    dv_state.config({"hv": {"tickets": {"key_file": str(key), "ledger_dir": str(ledger)}}},
                    base=hv_env.config_path)
    return key.read_bytes().strip(), ledger


def test_m2_view_tickets_are_refused(dv: Any, dv_state: Any, hv_env: Any, guest: Path,
                                     tmp_path: Path) -> None:
    key, _ledger = _shared_tickets(dv_state, hv_env, tmp_path)
    made = dv("hv", "ticket", "create", VM, "--mode", "view")
    assert made.code == 2, made
    assert "view-only console tickets are refused: plain VNC has a single password" in made.stderr
    before = _live_graphics(hv_env).get("passwd")
    now = int(time.time())
    view = _token(key, {"vm": VM, "node": "node1", "mode": "view", "iat": now, "exp": now + 300,
                        "jti": os.urandom(8).hex(), "by": "someone"})  # issued by an old version
    used = dv("hv", "ticket", "use", view)
    assert used.code == 2, used
    assert "view-only console tickets are refused" in used.stderr
    assert _live_graphics(hv_env).get("passwd") == before  # nothing was granted


def test_view_tickets_only_for_a_caller_sealed_through_the_panel(
        dv: Any, dv_state: Any, hv_env: Any, guest: Path, tmp_path: Path) -> None:
    """A view ticket goes only to a call rpcd received through a proxy it lists in [rpcd]
    proxies (the panel, whose console proxy drops input): sealed ``alice via=panel`` gets
    one and can use it; an unsealed claim, or a sealed call through another certificate,
    is refused as before."""
    from debvisor_core.audit import caller_env

    _shared_tickets(dv_state, hv_env, tmp_path)
    dv_state.config({"rpcd": {"proxies": ["panel"]}}, base=dv_state.config_path)
    for label, sealed in (("alice via=panel", False), ("alice via=other", True)):
        env = caller_env(label) if sealed else {"DEBVISOR_CALLER": label}
        refused = dv("hv", "ticket", "create", VM, "--mode", "view", env=env)
        assert refused.code == 2 and "view-only console tickets are refused" in refused.stderr
    env = caller_env("alice via=panel")
    assert env["DEBVISOR_CALLER_SEAL"], "no rpcd caller key: the seal cannot be made"
    made = dv("--json", "hv", "ticket", "create", VM, "--mode", "view", env=env)
    assert made.code == 0 and made.json["mode"] == "view", made
    plain = dv("hv", "ticket", "use", made.json["token"])  # the same ticket, by a person
    assert plain.code == 2 and "view-only console tickets are refused" in plain.stderr
    used = dv("--json", "hv", "ticket", "use", made.json["token"], env=env)
    assert used.code == 0 and used.json["password"], used


def test_m2_vnc_password_validity_is_capped(dv: Any, dv_state: Any, hv_env: Any, guest: Path,
                                            tmp_path: Path) -> None:
    _shared_tickets(dv_state, hv_env, tmp_path)
    made = dv("--json", "hv", "ticket", "create", VM, "--mode", "admin", "--ttl", "3600")
    assert made.code == 0, made
    t0 = time.time()
    used = dv("--json", "hv", "ticket", "use", made.json["token"])
    assert used.code == 0, used
    g = _live_graphics(hv_env)
    assert g.get("passwd") == used.json["password"]
    valid_to = calendar.timegm(time.strptime(g.get("passwdValidTo") or "", "%Y-%m-%dT%H:%M:%S"))
    assert valid_to <= time.time() + 60 + 1  # one minute to connect, not the ticket's hour
    assert valid_to >= t0 + 50
    assert used.json["password_valid_to"] == int(valid_to)


def test_m2_single_use_holds_across_admin_hosts(dv: Any, dv_state: Any, hv_env: Any,
                                                guest: Path, tmp_path: Path) -> None:
    _shared_tickets(dv_state, hv_env, tmp_path)
    host_b = {"DEBVISOR_STATE_DIR": str(tmp_path / "host-b")}
    tok = dv("--json", "hv", "ticket", "create", VM, "--mode", "admin").json["token"]
    assert dv("hv", "ticket", "use", tok).code == 0
    replay = dv("hv", "ticket", "use", tok, env=host_b)
    assert replay.code == 2, replay
    assert "ticket used" in replay.stderr
    # two hosts at the same time: exactly one wins
    tok2 = dv("--json", "hv", "ticket", "create", VM, "--mode", "admin").json["token"]
    procs = [dv.popen("hv", "ticket", "use", tok2), dv.popen("hv", "ticket", "use", tok2, env=host_b)]
    codes = sorted(p.wait(timeout=120) for p in procs)
    assert codes == [0, 2], [p.stderr.read() if p.stderr else "" for p in procs]


def test_m2_m4_token_on_stdin_verify_read_only_corrupt_ledger(
        dv: Any, dv_state: Any, hv_env: Any, guest: Path, tmp_path: Path) -> None:
    # `ticket verify` on a host that never issued a ticket creates no key
    fresh = tmp_path / "fresh"
    v = dv("hv", "ticket", "verify", "dvt1.e30.AAAA", env={"DEBVISOR_STATE_DIR": str(fresh)})
    assert v.code == 1 and v.stdout.startswith("forged"), v
    assert not list(fresh.rglob("ticket.key"))
    assert "hv ticket key" not in (fresh / "log" / "audit.jsonl").read_text() \
        if (fresh / "log" / "audit.jsonl").exists() else True
    # a corrupt used-ticket ledger is not an internal error
    legacy = dv_state.path / "plugins" / "hv" / "tickets-used"
    legacy.parent.mkdir(parents=True, exist_ok=True)
    legacy.write_text("garbage\nnot-a-ticket also-not-a-time\n\x00\x01\n")
    made = dv("--json", "hv", "ticket", "create", VM, "--mode", "admin")
    assert made.code == 0, made
    tok = made.json["token"]
    used = dv("--json", "hv", "ticket", "use", "-", input=tok + "\n")  # the token on stdin
    assert used.code == 0, used
    assert _live_graphics(hv_env).get("passwd") == used.json["password"]
    # a token given on argv and refused (wrong VM: it stays valid) is not in the audit log
    tok2 = dv("--json", "hv", "ticket", "create", VM, "--mode", "admin").json["token"]
    wrong = dv("hv", "ticket", "use", tok2, "--vm", "othervm")
    assert wrong.code == 2, wrong
    audit = _audit_text(dv_state)
    assert '"console ticket"' in audit and "refused" in audit
    for secret in (tok, tok2, tok.rsplit(".", 1)[1], tok2.rsplit(".", 1)[1]):
        assert secret not in audit


# --- L4: --no-tls ------------------------------------------------------------------------


def test_l4_no_tls_overrides_the_config(dv: Any, dv_state: Any, hv_env: Any,
                                        guest: Path) -> None:
    dv_state.config({"hv": {"migration": {"tls": True}}}, base=hv_env.config_path)
    # (the guest's disk is node-local: --copy-storage lets the dry run pass preflight)
    plain = dv("--json", "hv", "migrate", VM, "node2", "--copy-storage", "--no-tls", "--dry-run")
    assert plain.code == 0, plain
    assert "TLS" not in plain.json["steps"][-1]["description"]
    tls = dv("--json", "hv", "migrate", VM, "node2", "--copy-storage", "--dry-run")
    assert tls.code == 0, tls
    assert ", TLS" in tls.json["steps"][-1]["description"]


# --- L11: an error in a libvirt event callback is one clear error -----------------------


def test_l11_console_with_closed_output_ends_with_one_error(hv_env: Any, guest: Path) -> None:
    proc = subprocess.Popen([sys.executable, "-m", "debvisor_core", "hv", "console", VM],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, env=dict(os.environ))
    assert proc.stdout is not None and proc.stderr is not None
    try:
        seen = b""
        deadline = time.monotonic() + 30
        os.set_blocking(proc.stdout.fileno(), False)
        while lab.HEARTBEAT.encode() not in seen and time.monotonic() < deadline:
            chunk = proc.stdout.read(4096)
            if chunk:
                seen += chunk
            else:
                time.sleep(0.1)
        assert lab.HEARTBEAT.encode() in seen
        proc.stdout.close()  # like `| head`: the next heartbeat hits a closed pipe
        assert proc.wait(timeout=20) == 1
        err = proc.stderr.read().decode()
        assert f"[ERROR] console of {VM} ended: the console output was closed" in err
        assert "Traceback" not in err and "Exception ignored" not in err
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


# --- L12: stashed VNC passwords do not pile up -----------------------------------------

NODE_XML = """<node>
  <domain type='test'>
    <name>vmpw</name>
    <memory>131072</memory>
    <vcpu>1</vcpu>
    <os><type>hvm</type></os>
    <devices>
      <graphics type='vnc' port='5901' autoport='no' listen='127.0.0.1' passwd='OLDpw'/>
    </devices>
  </domain>
</node>
"""


def test_l12_stashed_vnc_passwords_are_pruned(dv_state: Any, tmp_path: Path) -> None:
    """No lab: the test driver (per process, so the commands run in this process)."""
    from debvisor_core.cli import main_group

    def run(*args: str) -> Any:
        rv = main_group.main(list(args), prog_name="debvisor", standalone_mode=False)
        return 0 if rv is None else rv

    node_xml = tmp_path / "node.xml"
    node_xml.write_text(NODE_XML)
    dv_state.config({"hv": {"nodes": {"n1": {"uri": f"test://{node_xml}"}}}})
    stash = dv_state.path / "plugins" / "hv" / "vnc-prior-passwd"
    stash.mkdir(parents=True, mode=0o700)
    orphan = stash / "vmpw-0123456789abcdef"  # left by a run killed before its intent
    orphan.write_text("LEAKED")
    orphan.chmod(0o600)
    other_vm = stash / "vmpw2-0123456789abcdef"  # another VM's: not ours to judge
    other_vm.write_text("x")
    pw = tmp_path / "pw"
    for i, port in enumerate(("5905", "5906")):
        pw.write_text(f"pw{i}\n")
        pw.chmod(0o600)
        assert run("--yes", "hv", "vnc", "target", "vmpw", "--listen", "127.0.0.1", "--port",
                   port, "--password-file", str(pw)) == 0
    left = sorted(p.read_text() for p in stash.iterdir() if p.name.startswith("vmpw-"))
    assert left == ["pw0"]  # only the newest op's copy (for --rollback); no orphan, no OLDpw
    assert other_vm.exists()
    assert run("--yes", "hv", "vnc", "target", "--rollback") == 0
    assert [p for p in stash.iterdir() if p.name.startswith("vmpw-")] == []


# --- L11: a non-libvirt error in the migration thread is one clear error ----------------


class _FakeDom:
    def migrate3(self, *_a: Any) -> Any:
        raise KeyError("boom")  # not a libvirtError: a bug or a binding surprise

    def migrateSetMaxDowntime(self, *_a: Any) -> None:
        pass

    def XMLDesc(self, _flags: int) -> str:
        return "<domain><memory unit='KiB'>1024</memory></domain>"

    def jobStats(self, _flags: int) -> dict[str, Any]:
        return {}

    def abortJob(self) -> None:
        pass


class _FakeConn:
    def lookupByName(self, _name: str) -> _FakeDom:
        return _FakeDom()


def test_l11_migration_thread_error_is_one_step_failure(
        dv_state: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """No lab: fake connections; the thread's exception must come back as StepFailed (not
    a thread traceback followed by KeyError 'dom')."""
    import threading

    from debvisor_libvirt import migrate
    from debvisor_libvirt.nodes import Node

    from debvisor_core.context import Context
    from debvisor_core.errors import StepFailed

    monkeypatch.setattr(migrate, "connect", lambda _n, **_k: _FakeConn())
    escaped: list[BaseException] = []
    monkeypatch.setattr(threading, "excepthook", lambda a: escaped.append(a.exc_value))
    step = migrate.MigrateVM("vmx", "n1", "n2", timeout_s=30)
    src, dst = Node("n1", "test:///default", "10.0.0.1"), Node("n2", "test:///default", "10.0.0.2")
    with pytest.raises(StepFailed, match="migration of vmx to n2 failed: KeyError: 'boom'"):
        step._migrate(Context(), src, dst, True)
    assert escaped == []
