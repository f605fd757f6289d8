"""The audit log under crashes, concurrency and tampering (security review H5, M3, L1, L3).

No change without its audit record: a torn tail is repaired (not a reason to fail after the
change), a tail that cannot be repaired refuses before any change, short writes are
continued, the head is replaced atomically and sealed with a keyed HMAC, a crash between
the log and head writes is no false alarm, ``verify`` never cries TAMPERED under concurrent
writers, and deleting the log, rewriting the head or replacing the chain are detected.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import stat
import subprocess
import sys
import types
from pathlib import Path
from typing import Any

import pytest

from debvisor_core import audit, identity
from debvisor_core.builtin import syslog_sink
from debvisor_core.context import Context
from debvisor_core.testing import Runner, StateDir


def log_of(state: StateDir) -> Path:
    return state.path / "log" / "audit.jsonl"


def head_of(state: StateDir) -> Path:
    return state.path / "log" / "audit.head"


def records(path: Path) -> list[dict[str, Any]]:
    return [json.loads(x) for x in path.read_text().splitlines()]


def add(dv: Runner, name: str, text: str = "t") -> Any:
    return dv("example", "note", "add", name, text, "--yes")


def note(state: StateDir, name: str) -> Path:
    return state.path / "plugins" / "example" / "notes" / name


@pytest.fixture
def chain(dv: Runner, dv_state: StateDir) -> Path:
    """Five events written by the real command, verified intact."""
    for i in range(5):
        assert dv("maintenance", "enable" if i % 2 == 0 else "disable").code == 0
    assert dv("audit", "verify").code == 0
    return log_of(dv_state)


# -- H5: a torn tail ---------------------------------------------------------------------
def test_a_torn_tail_is_repaired_and_the_next_operation_audited(dv: Runner, dv_state: StateDir,
                                                                 site_plugins: Path) -> None:
    assert add(dv, "n1").code == 0
    with open(log_of(dv_state), "ab") as f:
        f.write(b'{"torn')  # power loss or ENOSPC in the middle of a write
    res = add(dv, "n2")
    assert res.code == 0, res
    ev = records(log_of(dv_state))
    assert [e["result"] for e in ev] == ["started", "succeeded", "repaired", "started", "succeeded"]
    assert ev[2]["details"]["dropped_bytes"] == 6
    assert [e["seq"] for e in ev] == [1, 2, 3, 4, 5]
    res = dv("audit", "verify")
    assert res.code == 0 and "5 lines, chain intact; 1 torn write(s) repaired" in res.stdout, res


def test_a_tail_that_cannot_be_repaired_refuses_before_any_change(dv: Runner, dv_state: StateDir,
                                                                  site_plugins: Path) -> None:
    assert add(dv, "n1").code == 0
    with open(log_of(dv_state), "ab") as f:  # the old writer appended onto a torn line
        f.write(b'{"torn{"result":"x"}\n')
    before = log_of(dv_state).read_bytes()
    res = dv("example", "note", "add", "n2", "t", "--check")  # preflight sees it
    assert res.code == 3 and "not an audit record (line 3)" in res.stderr, res
    res = add(dv, "n2")
    assert res.code == 3 and "cannot be repaired automatically" in res.stderr, res
    assert "Traceback" not in res.stderr
    assert not note(dv_state, "n2").exists() and log_of(dv_state).read_bytes() == before


# -- L1: short writes ----------------------------------------------------------------------
class _Os:
    """``os`` as the audit module sees it, with ``write`` cut short and calls recorded."""

    def __init__(self, *, chunk: int = 5, fail_after: int | None = None) -> None:
        self.chunk, self.fail_after, self.writes = chunk, fail_after, 0
        self.calls: list[tuple[str, Any]] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(os, name)

    def write(self, fd: int, data: bytes) -> int:
        self.writes += 1
        if self.fail_after is not None and self.writes > self.fail_after:
            raise OSError(errno.ENOSPC, "No space left on device")
        return os.write(fd, bytes(data[:self.chunk]))

    def fsync(self, fd: int) -> None:
        st = os.fstat(fd)
        self.calls.append(("fsync-dir" if stat.S_ISDIR(st.st_mode) else "fsync", st.st_ino))
        os.fsync(fd)

    def replace(self, src: Any, dst: Any, **kw: Any) -> None:
        self.calls.append(("replace", Path(dst).name))
        os.replace(src, dst, **kw)


def test_short_writes_are_continued(dv_state: StateDir, monkeypatch: pytest.MonkeyPatch) -> None:
    path = log_of(dv_state)
    with monkeypatch.context() as m:
        m.setattr(audit, "os", _Os(chunk=5))
        for i in range(3):
            audit.append(path, {"i": i, "result": "test"})
    assert [e["i"] for e in records(path)] == [0, 1, 2]
    ok, msg, n = audit.verify(path)
    assert ok and n == 3, msg


def test_enospc_mid_write_leaves_no_torn_line(dv_state: StateDir,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    path = log_of(dv_state)
    audit.append(path, {"i": 0, "result": "test"})
    with monkeypatch.context() as m:
        m.setattr(audit, "os", _Os(chunk=5, fail_after=3))
        with pytest.raises(OSError):
            audit.append(path, {"i": 1, "result": "test"})
    assert path.read_bytes().endswith(b"\n")  # cut back to the last record
    audit.append(path, {"i": 2, "result": "test"})
    assert [e["i"] for e in records(path)] == [0, 2]
    assert audit.verify(path)[0]


# -- M3: the head ------------------------------------------------------------------------
def test_the_head_is_replaced_atomically_and_durably(dv_state: StateDir, tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    path, head = log_of(dv_state), head_of(dv_state)
    audit.append(path, {"i": 0, "result": "test"})
    victim = tmp_path / "victim"
    victim.write_text("precious")
    for name in ("audit.head.tmp", ".audit.head.tmp"):  # planted temporary names
        (path.parent / name).symlink_to(victim)
    spy = _Os(chunk=1 << 20)
    with monkeypatch.context() as m:
        m.setattr(audit, "os", spy)
        audit.append(path, {"i": 1, "result": "test"})
    assert victim.read_text() == "precious"
    assert json.loads(head.read_text())["count"] == 2
    at = spy.calls.index(("replace", "audit.head"))
    # the new head's own inode was fsynced before the rename, the directory after it
    assert ("fsync", head.stat().st_ino) in spy.calls[:at]
    assert ("fsync-dir", path.parent.stat().st_ino) in spy.calls[at:]


def test_a_crash_between_log_and_head_is_no_false_alarm(dv_state: StateDir) -> None:
    path, head = log_of(dv_state), head_of(dv_state)
    for i in range(3):
        audit.append(path, {"i": i, "result": "test"})
    saved = head.read_bytes()
    audit.append(path, {"i": 3, "result": "test"})
    head.write_bytes(saved)  # what a crash right after the log's fsync leaves
    ok, msg, n = audit.verify(path)
    assert ok and n == 4 and "one record behind" in msg, msg
    audit.append(path, {"i": 4, "result": "test"})  # and it is not off by one for ever
    assert json.loads(head.read_text())["count"] == 5 == len(records(path))
    ok, msg, n = audit.verify(path)
    assert ok and msg == "5 lines, chain intact", msg


def test_an_unsealed_log_of_an_older_version_upgrades_without_alarm(dv_state: StateDir) -> None:
    path, head = log_of(dv_state), head_of(dv_state)
    path.parent.mkdir()
    prev, lines = "0" * 64, []
    for i in range(3):  # records without seq, as older versions wrote them
        rec: dict[str, Any] = {"result": "enabled", "i": i, "prev": prev}
        prev = hashlib.sha256(json.dumps(rec, sort_keys=True, separators=(",", ":")).encode()
                              ).hexdigest()
        lines.append(json.dumps({**rec, "hash": prev}))
    path.write_text("\n".join(lines) + "\n")
    head.write_text(json.dumps({"count": 2, "hash": prev}))  # its count lagged after a crash
    ok, msg, n = audit.verify(path)
    assert ok and n == 3, msg
    audit.append(path, {"i": 3, "result": "test"})
    assert records(path)[-1]["seq"] == 4 and json.loads(head.read_text())["count"] == 4
    assert "mac" in json.loads(head.read_text())  # sealed from now on
    key = dv_state.path / "keys" / "audit.key"
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    ok, msg, n = audit.verify(path)
    assert ok and msg == "4 lines, chain intact", msg


WRITER = """
import sys
from pathlib import Path
from debvisor_core.audit import append
path, proc, n = Path(sys.argv[1]), sys.argv[2], int(sys.argv[3])
for i in range(n):
    append(path, {"proc": proc, "i": i, "result": "test"})
"""


def test_verify_never_cries_tampered_under_eight_writers(dv_state: StateDir) -> None:
    path = log_of(dv_state)
    audit.append(path, {"result": "test"})
    procs = [subprocess.Popen([sys.executable, "-c", WRITER, str(path), str(p), "150"])
             for p in range(8)]
    runs, bad = 0, []
    try:
        while any(p.poll() is None for p in procs):
            ok, msg, _ = audit.verify(path)
            runs += 1
            if not ok:
                bad.append(msg)
    finally:
        codes = [p.wait(timeout=300) for p in procs]
    assert codes == [0] * 8
    assert bad == [] and runs >= 5, (runs, bad[:3])
    ok, msg, n = audit.verify(path)
    assert ok and n == 1 + 8 * 150, msg


def test_a_deleted_log_is_detected(dv: Runner, chain: Path, dv_state: StateDir) -> None:
    chain.unlink()
    res = dv("audit", "verify")
    assert res.code == 1 and "TAMPERED — the log is missing but its head" in res.stdout, res
    head_of(dv_state).unlink()  # both gone: the key outside the log directory remembers
    res = dv("audit", "verify")
    assert res.code == 1 and "the log and its head are missing but the audit key" in res.stdout


def test_a_head_rewritten_after_truncation_is_detected(dv: Runner, chain: Path,
                                                       dv_state: StateDir) -> None:
    head = head_of(dv_state)
    kept = chain.read_text().splitlines()[:2]
    chain.write_text("\n".join(kept) + "\n")
    last = json.loads(kept[-1])["hash"]
    head.write_text(json.dumps({"count": 2, "hash": last}))  # an unsealed head, as before
    res = dv("audit", "verify")
    assert res.code == 1 and "is not sealed although the audit key" in res.stdout, res
    sealed = {"count": 2, "hash": last, "mac": "0" * 64}  # a guess at the seal
    head.write_text(json.dumps(sealed))
    res = dv("audit", "verify")
    assert res.code == 1 and "does not carry a valid HMAC" in res.stdout, res
    # the next write keeps the evidence in the chain instead of sealing the forgery
    assert dv("maintenance", "enable").code == 0
    res = dv("audit", "verify")
    assert res.code == 1 and ("line 3: when it was written the log did not match its head"
                              in res.stdout), res


def _fresh_chain(n: int) -> str:
    prev, out = "0" * 64, []
    for i in range(n):
        rec: dict[str, Any] = {"result": "enabled", "seq": i + 1, "i": i, "prev": prev}
        prev = hashlib.sha256(
            json.dumps(rec, sort_keys=True, separators=(",", ":")).encode()).hexdigest()
        rec["hash"] = prev
        out.append(json.dumps(rec, sort_keys=True, separators=(",", ":")))
    return "\n".join(out) + "\n"


def test_a_fresh_chain_replacing_the_old_one_is_detected(dv: Runner, chain: Path,
                                                         dv_state: StateDir) -> None:
    chain.write_text(_fresh_chain(5))
    res = dv("audit", "verify")
    assert res.code == 1 and "the log does not match its head" in res.stdout, res
    head_of(dv_state).unlink()
    res = dv("audit", "verify")
    assert res.code == 1 and "missing although the audit key" in res.stdout, res
    # log and head deleted, then the next command starts a chain: still detected
    chain.unlink()
    assert dv("maintenance", "enable").code == 0
    res = dv("audit", "verify")
    assert res.code == 1 and "line 1: when it was written the log did not match" in res.stdout


# -- the syslog anchor ---------------------------------------------------------------------
def test_every_syslog_message_carries_seq_and_hash(dv_state: StateDir,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    sent: list[str] = []
    fake = types.SimpleNamespace(LOG_AUTHPRIV=10 << 3, LOG_INFO=6, openlog=lambda *a: None,
                                 syslog=lambda _pri, msg: sent.append(msg))
    monkeypatch.setitem(sys.modules, "syslog", fake)
    monkeypatch.setattr(syslog_sink, "os", types.SimpleNamespace(
        path=types.SimpleNamespace(exists=lambda _p: True)))  # as if /dev/log were there
    ctx = Context(argv=["debvisor", "maintenance", "enable"])
    for result in ("enabled", "disabled"):
        audit.record(ctx, result=result)
    recs = records(log_of(dv_state))
    assert len(sent) == 2
    for rec, msg in zip(recs, sent, strict=True):
        assert msg.startswith(f"seq={rec['seq']} hash={rec['hash']} ")
        assert json.loads(msg.split(" ", 2)[2]) == rec


# -- M4: argv in the audit log -------------------------------------------------------------
def test_secret_arguments_never_reach_the_audit_log(dv_state: StateDir) -> None:
    argv = ["debvisor", "hv", "iso", "build", "--password", "hunter2", "--token=tok-4711",
            "--set", "join_token=abcdef.0123456789abcdef", "--set", "hostname=web1",
            "ticket", "dvt1.eyJ2bSI6InZtMSJ9.c2lnbmF0dXJl"]
    audit.record(Context(argv=argv), result="test",
                 details={"params": {"password": "hunter2", "name": "web1"}})
    text = log_of(dv_state).read_text()
    for secret in ("hunter2", "tok-4711", "abcdef.0123456789abcdef", "dvt1.eyJ2"):
        assert secret not in text
    rec = records(log_of(dv_state))[-1]
    assert rec["argv"][4] == "--password" and rec["argv"][5].startswith("secret:hmac:")
    assert "hostname=web1" in rec["argv"] and rec["details"]["params"]["name"] == "web1"


# -- L3: who did it ------------------------------------------------------------------------
def test_a_forged_sudo_user_is_recorded_as_a_claim(monkeypatch: pytest.MonkeyPatch,
                                                   tmp_path: Path) -> None:
    import pwd

    other = pwd.getpwuid(1) if any(p.pw_uid == 1 for p in pwd.getpwall()) else pwd.getpwuid(0)
    loginuid = tmp_path / "loginuid"
    monkeypatch.setattr(identity, "LOGINUID", str(loginuid), raising=False)
    monkeypatch.setenv("SUDO_USER", other.pw_name)

    def who(sudo_uid: str, login: str) -> dict[str, Any]:
        monkeypatch.setenv("SUDO_UID", sudo_uid)
        loginuid.write_text(login)
        return identity.who()

    # SUDO_UID disagrees with the user it names: not believed
    w = who(str(other.pw_uid + 1000), str(other.pw_uid))
    assert w["sudo_user"] is None and w["claimed_sudo_user"] == other.pw_name
    # the login uid (kept across sudo) names someone else: not believed
    w = who(str(other.pw_uid), str(other.pw_uid + 1000))
    assert w["sudo_user"] is None and w["claimed_sudo_user"] == other.pw_name
    assert "unverified" in identity.operator()
    # all three agree: believed
    w = who(str(other.pw_uid), str(other.pw_uid))
    assert w["sudo_user"] == other.pw_name and "claimed_sudo_user" not in w
    # no login uid (a container): believed only for a process running as root
    w = who(str(other.pw_uid), "4294967295")
    assert (w["sudo_user"] == other.pw_name) == (os.getuid() == 0)


def test_a_caller_set_by_hand_is_recorded_as_claimed(dv: Runner, dv_state: StateDir) -> None:
    """DEBVISOR_CALLER names the rpcd caller a child run is for. Set by hand (anyone can set
    an environment variable) it must not read as an authenticated caller in the audit log:
    only the daemon's sealed value does; anything else is kept apart, as claimed_caller."""
    res = dv("maintenance", "enable", "--reason", "spoof", env={"DEBVISOR_CALLER": "admin"})
    assert res.code == 0, res
    ev = records(log_of(dv_state))[-1]
    assert ev["result"] == "enabled"
    assert "caller" not in ev and ev["claimed_caller"] == "admin", ev
    res = dv("maintenance", "disable", env={"DEBVISOR_CALLER": "admin",
                                            "DEBVISOR_CALLER_SEAL": "0" * 64})
    ev = records(log_of(dv_state))[-1]
    assert res.code == 0 and "caller" not in ev and ev["claimed_caller"] == "admin", ev


@pytest.mark.parametrize("since", ["99999999999999d", "9" * 400 + "s"])
def test_a_since_older_than_the_epoch_shows_everything(dv: Runner, dv_state: StateDir, since: str) -> None:
    """`audit show --since N` (and rpcd's AuditEvents, which reads it the same way) with a
    duration longer than the clock's past: the whole log, not an internal error (the
    cutoff's date overflowed: exit 1, "Value too large")."""
    assert dv("maintenance", "enable", "--reason", "old", "--yes").code == 0
    res = dv("audit", "show", "--since", since, "--json")
    assert res.code == 0, res.stderr
    assert [e["result"] for e in res.json] == [e["result"] for e in records(log_of(dv_state))]
