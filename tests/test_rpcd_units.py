"""debvisor-rpcd's parts that need no server: the guard's table of handlers, the settings
and policy read through ``Section``, the event fields a proxy may record, and the
inotify watch that spares the API-key check a ``stat`` per call. The auth matrix, Call
and RecordEvent against a real daemon are in test_rpcd.py."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import grpc
import pytest

from debvisor_core.errors import BadInput
from debvisor_core.rpcd import events
from debvisor_core.rpcd.authz import Policy
from debvisor_core.rpcd.server import CALL, SERVICE, Guard, Settings
from debvisor_core.settings import Section


# -- the guard: every handler kind it does not wrap is denied -------------------------------
class _Metrics:
    def __init__(self) -> None:
        self.calls: list[tuple[str, str]] = []

    def call(self, method: str, code: str, elapsed: float | None = None) -> None:
        self.calls.append((method, code))


class _Daemon:
    def __init__(self) -> None:
        self.records: list[dict[str, Any]] = []
        self.metrics = _Metrics()
        self.settings = Settings()

    def record(self, rec: dict[str, Any], context: Any = None) -> None:
        self.records.append(rec)


class _Aborted(Exception):
    pass


class _Context:
    def __init__(self) -> None:
        self.aborted: tuple[grpc.StatusCode, str] | None = None

    def peer(self) -> str:
        return "ipv4:127.0.0.1:1"

    def abort(self, code: grpc.StatusCode, why: str) -> None:
        self.aborted = (code, why)
        raise _Aborted(why)


def _deny_of(handler: Any, call: Any) -> tuple[_Daemon, _Context]:
    """Run a denying handler; what it logged and answered."""
    d, ctx = _Daemon(), _Context()
    guard = Guard(d)  # type: ignore[arg-type]
    wrapped = guard._wrap(f"/{SERVICE}/Chat", handler)
    with pytest.raises(_Aborted):
        out = call(wrapped, ctx)
        if hasattr(out, "__next__"):
            list(out)
    return d, ctx


@pytest.mark.parametrize("kind", ["stream_stream", "stream_unary"])
def test_a_streaming_request_of_the_service_is_denied_whatever_its_kind(kind: str) -> None:
    make = getattr(grpc, f"{kind}_rpc_method_handler")
    served = make(lambda req, ctx: pytest.fail("the handler ran"))
    d, ctx = _deny_of(served, lambda h, c: getattr(h, kind)(iter(()), c))
    assert ctx.aborted == (grpc.StatusCode.PERMISSION_DENIED, "streaming requests are not served")
    assert d.records[0]["code"] == "PERMISSION_DENIED" and d.records[0]["method"] == f"/{SERVICE}/Chat"
    assert d.metrics.calls == [("(not served)", "PERMISSION_DENIED")]


def test_a_handler_of_no_known_kind_is_denied() -> None:
    odd = grpc.unary_unary_rpc_method_handler(lambda req, ctx: pytest.fail("the handler ran"))
    odd = odd._replace(unary_unary=None)  # neither unary nor streaming: nothing wraps it
    d, ctx = _deny_of(odd, lambda h, c: h.unary_unary(object(), c))
    assert ctx.aborted == (grpc.StatusCode.PERMISSION_DENIED, "this kind of method is not served")


def test_the_wrapped_handlers_are_made_once_per_served_method() -> None:
    guard = Guard(_Daemon())  # type: ignore[arg-type]
    served = grpc.unary_unary_rpc_method_handler(lambda req, ctx: None)
    asked: list[str] = []

    class Details:
        def __init__(self, method: str) -> None:
            self.method = method
            self.invocation_metadata = ()

    def lookup(details: Any) -> Any:
        asked.append(details.method)
        return served if details.method == CALL else None

    first = guard.intercept_service(lookup, Details(CALL))
    assert first is not served and guard.intercept_service(lookup, Details(CALL)) is first
    assert asked == [CALL]
    # an unknown method is denied each time and never kept (the table stays small)
    for _ in range(2):
        assert guard.intercept_service(lookup, Details("/x.Y/Z")).stream_stream is not None
    assert asked == [CALL, "/x.Y/Z", "/x.Y/Z"] and set(guard._wrapped) == {CALL}


# -- settings and policy through Section --------------------------------------------------------
def _section(**data: Any) -> Section:
    return Section("/etc/debvisor/debvisor.toml", "[rpcd]", data)


def test_settings_defaults_config_and_command_line() -> None:
    s = Settings.from_section(_section(rate=5, burst=10, durable_log=False, max_workers=8,
                                       listen="0.0.0.0:7443", proxies=["panel"]),
                              listen="127.0.0.1:9", insecure_lab=False, call_log=None)
    assert (s.rate, s.burst, s.durable_log, s.max_workers) == (5.0, 10.0, False, 8)
    assert s.listen == "127.0.0.1:9" and s.default_deadline_s == 60.0
    assert s.policy.proxies == frozenset({"panel"})
    # plain text only ever comes from the --insecure-lab flag
    assert Settings.from_section(_section(insecure_lab=True)).insecure_lab is False


@pytest.mark.parametrize(("data", "said"), [
    ({"rate": "fast"}, "[rpcd] rate must be a number of calls a second ≥ 0, not 'fast'"),
    ({"max_workers": 2.5}, "[rpcd] max_workers must be a whole number from 1 to 4096, not 2.5"),
    ({"durable_log": "yes"}, "[rpcd] durable_log must be true or false, not 'yes'"),
    ({"default_deadline_s": 0}, "[rpcd] default_deadline_s must be a number of seconds > 0, not 0"),
    ({"listen": 7443}, "[rpcd] listen must be a non-empty string, not 7443"),
    ({"session_ttl": 100.0, "session_max": 50.0}, "[rpcd] session_ttl must not be longer than "
                                                   "session_max"),
    ({"proxies": "panel"}, "[rpcd] proxies must be a list of strings"),
    ({"identities": {"alice": 3}}, "[rpcd.identities] alice must be a role or a list of roles"),
    ({"identities": []}, "[rpcd] identities must be a table ([rpcd.identities])"),
    ({"roles": {"ops": {"allow": "hv.*"}}}, "[rpcd.roles.ops] allow must be a list of strings"),
])
def test_a_wrong_setting_is_one_sentence_naming_the_key_and_the_file(data: dict[str, Any],
                                                                     said: str) -> None:
    with pytest.raises(BadInput) as err:
        Settings.from_section(_section(**data))
    assert err.value.message.startswith(f"config /etc/debvisor/debvisor.toml: {said}"), \
        err.value.message
    assert "\n" not in err.value.message


def test_policy_roles_and_identities() -> None:
    p = Policy.from_section(_section(identities={"alice": "operator", "bob": ["viewer", "ops"]},
                                     roles={"ops": {"allow": ["rpc:Call", "ops.*"]}}))
    assert p.identities == {"alice": ("operator",), "bob": ("viewer", "ops")}
    assert p.roles["ops"] == ("rpc:Call", "ops.*") and "viewer" in p.roles
    assert "rpc:Call" in p.roles["viewer"]  # a viewer may Call the queries it may Invoke


# -- what a proxy may record ---------------------------------------------------------------------
def test_the_console_events_of_the_panel_pass_as_they_are() -> None:
    close = {"event": "console.close", "user": "carol", "client": None, "vm": "web-1",
             "mode": "control", "ticket": "a1b2c3", "reason": "closed", "code": 1000,
             "duration_s": 3.25, "dropped": {"type7": 1}, "dropped_total": 1,
             "forwarded": {"KeyEvent": 12, "PointerEvent": 40},
             "stripped": {"QEMUAudio": 1, "-999": 2}, "bytes_to_vm": 100,
             "bytes_from_browser": 2000}
    kind, details = events.from_proxy_event(close)
    assert kind == "console.close" and "user" not in details and "event" not in details
    assert events.checked(kind, json.dumps(details)) == details
    for kind in events.KINDS:
        assert events.checked(kind, "") == {}


@pytest.mark.parametrize(("kind", "raw", "said"), [
    ("console.exec", "{}", "event kind 'console.exec' is not one a proxy may record"),
    ("console.open", '{"user": "root"}', "details key 'user' is not an event field (rpcd records"),
    ("console.open", '{"vm": ""}', "details vm: must be a name or address of at most 64"),
    ("console.open", '{"bytes_to_vm": 1.5}', "details bytes_to_vm: must be a whole number"),
    ("console.open", '{"duration_s": NaN}', "details duration_s: must be a number of seconds"),
    ("console.open", '{"stripped": [1]}', "details stripped: must be an object of at most 32"),
    ("console.open", '{"reason": "\\u001b[31m"}', "details reason: must be printable text"),
    ("console.open", "null", "details_json must be a JSON object, not NoneType"),
    ("console.open", "{", "details_json is not valid JSON"),
    ("console.open", '{"reason": "' + "é" * 2100 + '"}', "the event's details are"),
])
def test_anything_else_is_refused_in_one_sentence(kind: str, raw: str, said: str) -> None:
    with pytest.raises(BadInput) as err:
        events.checked(kind, raw)
    assert err.value.message.startswith(said), err.value.message


# -- the watch: no stat per call, a change seen at once ------------------------------------------
def _until(cond: Any, what: str) -> None:
    deadline = time.monotonic() + 5
    while not cond():
        assert time.monotonic() < deadline, what
        time.sleep(0.005)


def test_the_watch_counts_changes_in_its_directory(tmp_path: Path) -> None:
    from debvisor_core.rpcd.watch import DirWatch

    w = DirWatch(tmp_path)
    assert w.ok and w.generation == 0
    (tmp_path / "new.json").write_text("{}")
    _until(lambda: w.generation > 0, "a new file was never noticed")
    seen = w.generation
    (tmp_path / "tmp").write_text("{}")
    (tmp_path / "tmp").replace(tmp_path / "new.json")  # how statefile replaces a store
    _until(lambda: w.generation > seen, "a replaced file was never noticed")
    missing = DirWatch(tmp_path / "absent")
    assert missing.ok is False  # nothing to watch: readers stat instead


@pytest.mark.parametrize("watched", [True, False])
def test_a_revoked_key_is_refused_at_its_next_use(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                  watched: bool) -> None:
    monkeypatch.setenv("DEBVISOR_STATE_DIR", str(tmp_path))
    from debvisor_core.rpcd import apikeys
    from debvisor_core.rpcd.watch import DirWatch

    store = apikeys.store_path().parent
    store.mkdir(parents=True)
    watch = DirWatch(store if watched else tmp_path / "absent")
    assert watch.ok is watched
    keys = apikeys.KeyStore(watch)
    key, rec = apikeys.create("ci", "viewer", 3600)
    _until(lambda: keys.check(key).ok, "a new key was never accepted")
    calls: list[str] = []
    real_stat = apikeys.os.stat

    def counted(path: Any, *a: Any, **k: Any) -> Any:
        calls.append(str(path))
        return real_stat(path, *a, **k)

    monkeypatch.setattr(apikeys.os, "stat", counted)
    if watched:  # the create's last events may reach the watching thread after the first ok
        def quiet() -> bool:
            n = len(calls)
            return keys.check(key).ok and len(calls) == n

        _until(quiet, "the store never settled")
        calls.clear()
    for _ in range(3):
        assert keys.check(key).ok
    assert len(calls) == (0 if watched else 3)  # watched: no system call while nothing changed
    apikeys.revoke(rec["id"])
    _until(lambda: keys.check(key).why == "API key revoked", "the revocation was never seen")
    if not watched:  # a stat per check: the very next check sees it
        assert keys.check(key).why == "API key revoked"


# -- the daemon runs over the CLI's one Context ---------------------------------------------
def test_the_daemon_uses_the_context_it_is_given(tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    from debvisor_core.context import Context
    from debvisor_core.rpcd.server import Daemon

    monkeypatch.setenv("DEBVISOR_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.setenv("DEBVISOR_PLUGINS", "")
    conf = tmp_path / "debvisor.toml"
    conf.write_text('[rpcd]\nrate = 5.0\nproxies = ["panel"]\n[rpcd.identities]\nci = "viewer"\n')
    ctx = Context(config_file=str(conf))
    d = Daemon(Settings.from_context(ctx, call_log=str(tmp_path / "calls.jsonl")), ctx)
    try:
        assert d.ctx is ctx and d.env is ctx.env and d.config_file == str(conf)
        assert (d.bucket.rate, d.policy.identities, d.policy.proxies) == \
            (5.0, {"ci": ("viewer",)}, frozenset({"panel"}))
        assert "maintenance.status" in d.actions()
        assert ctx.env.host is not None  # the plugins the daemon serves are the CLI's, loaded once
        host = ctx.env.host
        d._actions = None
        d.actions()
        assert ctx.env.host is host
    finally:
        d.calllog.close()


def test_an_in_process_run_context_reads_as_a_context_made_the_usual_way(tmp_path: Path) -> None:
    """The daemon's run context sets only what differs from the class defaults: every
    field must read as the dataclass would have made it (a new field with a factory
    would be missing)."""
    import dataclasses

    from debvisor_core.context import Context, Env
    from debvisor_core.rpcd.server import _run_context
    from debvisor_core.ui import RecordingUI

    assert "__post_init__" not in vars(Context)  # the lean __init__ would skip it
    env, ui = Env(), RecordingUI()
    lean = _run_context(tmp_path, None)(env=env, argv=["debvisor-rpcd", "x.y"], _ui=ui)
    usual = Context(json=True, env=env, argv=["debvisor-rpcd", "x.y"], _ui=ui)
    for f in dataclasses.fields(Context):
        assert getattr(lean, f.name) == getattr(usual, f.name), f.name
    other = _run_context(tmp_path, None)(env=env, argv=[], _ui=ui)
    lean.op_options.dry_run, lean.target = True, {"vm": "a"}
    assert other.op_options.dry_run is False and other.target is None  # nothing shared
    assert lean.state_dir == tmp_path and lean.ui is ui


def test_the_token_bucket_keeps_its_tokens_when_calls_read_the_clock_out_of_order() -> None:
    from debvisor_core.rpcd.authz import Bucket

    b = Bucket(rate=1.0, burst=2.0)
    assert b.take("a", 100.0) == 0.0 and b.take("a", 100.0) == 0.0
    assert b.take("a", 99.5) == pytest.approx(1.0)  # read the clock first, came in last
    assert b.take("a", 100.5) == pytest.approx(0.5)  # not lost: half a token since 100.0
    assert b.take("a", 101.0) == 0.0
    assert b.take("b", 101.0) == 0.0  # each identity its own


def test_maintenance_status_in_the_daemon_reads_the_file_only_when_it_changed(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from debvisor_core.builtin import maintenance
    from debvisor_core.context import Context
    from debvisor_core.rpcd.server import Daemon, Node
    from debvisor_core.statefile import write_json

    state = tmp_path / "state"
    state.mkdir()
    monkeypatch.setenv("DEBVISOR_STATE_DIR", str(state))
    monkeypatch.setenv("DEBVISOR_PLUGINS", "")
    ctx = Context()
    d = Daemon(Settings.from_context(ctx, call_log=str(tmp_path / "calls.jsonl")), ctx)
    reads: list[Any] = []
    real_read = maintenance._read

    def counted(path: Any) -> Any:
        reads.append(path)
        return real_read(path)

    monkeypatch.setattr(maintenance, "_read", counted)
    node, action = Node(d), d.actions()["maintenance.status"]

    def status() -> Any:
        events, code, data = node._run(action, {})
        assert code == 0 and events[-1] == {"event": "exit", "code": 0}
        return data

    try:
        assert getattr(ctx.env, "state_watch", None) is not None  # the daemon watches the state dir
        assert status() == {"enabled": False}
        reads.clear()
        for _ in range(3):
            assert status() == {"enabled": False}
        assert reads == []  # nothing changed: no open() of the missing file per query
        write_json(state / "maintenance.json", {"enabled": True, "reason": "r"})  # another process
        _until(lambda: status().get("reason") == "r", "maintenance on was never seen")
        first = status()
        first["reason"] = "changed by a caller"
        assert status()["reason"] == "r"  # each query gets its own copy
        (state / "maintenance.json").unlink()
        _until(lambda: status() == {"enabled": False}, "maintenance off was never seen")
    finally:
        d.calllog.close()


def test_a_line_covered_by_a_failed_fsync_fails_even_after_a_later_one_succeeded(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Linux reports a writeback error to one fsync only: a later fsync that succeeds says
    nothing of the lines the failed one covered, and their calls must still fail."""
    import os

    from debvisor_core.rpcd.calllog import CallLog

    log = CallLog(tmp_path / "calls.jsonl", gather_s=0)
    real_fsync = os.fsync
    fail = iter([True])

    def fsync(fd: int) -> None:
        if next(fail, False):
            raise OSError(5, "Input/output error")
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    with pytest.raises(OSError):
        log.write({"method": "a"})  # line 1: its fsync fails
    log.write({"method": "b"})  # line 2: a new fsync succeeds and covers lines 1 and 2
    with pytest.raises(OSError, match="fsync failed"):
        log._wait_durable(1)  # line 1's call (a thread that had not looked yet) still fails
    log._wait_durable(2)
    log.close()


def test_concurrent_writers_share_fsyncs_and_each_waits_for_its_own_line(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Group commit: no write returns before an fsync that covers its line has ended, and
    writers waiting together share fsyncs."""
    import os
    import threading

    from debvisor_core.rpcd.calllog import CallLog

    log = CallLog(tmp_path / "calls.jsonl", gather_s=0)
    real_fsync = os.fsync
    ended: list[int] = []  # the last line each fsync that ended covered

    def fsync(fd: int) -> None:
        upto = log._seq  # what the writer starting it counts on
        time.sleep(0.005)
        real_fsync(fd)
        ended.append(upto)

    monkeypatch.setattr(os, "fsync", fsync)
    early: list[int] = []

    def writer() -> None:
        for _ in range(20):
            rec: dict[str, Any] = {"method": "m"}
            log.write(rec)
            if max(ended, default=0) < rec["seq"]:
                early.append(rec["seq"])

    threads = [threading.Thread(target=writer) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert not any(t.is_alive() for t in threads) and early == []
    assert log._synced == 160 and len(ended) < 80  # shared: far fewer fsyncs than lines
    log.close()


def test_a_failed_fsync_fails_its_lines_and_wakes_the_writers_it_did_not_cover(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import os
    import threading

    from debvisor_core.rpcd.calllog import CallLog

    log = CallLog(tmp_path / "calls.jsonl", gather_s=0)
    real_fsync = os.fsync
    started, second = threading.Event(), threading.Event()

    def fsync(fd: int) -> None:
        if not started.is_set():  # the first: fails once the second line waits
            started.set()
            assert second.wait(10)
            time.sleep(0.05)
            raise OSError(5, "Input/output error")
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    out: dict[str, Any] = {}

    def write(name: str) -> None:
        try:
            log.write({"method": name})
            out[name] = "ok"
        except OSError as exc:
            out[name] = str(exc)

    a = threading.Thread(target=write, args=("a",))
    a.start()
    assert started.wait(10)
    b = threading.Thread(target=write, args=("b",))  # written after a's fsync began
    b.start()
    second.set()
    a.join(10)
    b.join(10)
    assert not a.is_alive() and not b.is_alive()
    assert out == {"a": "[Errno 5] Input/output error", "b": "ok"}
    log.close()


# -- grpc's settings, made before grpc starts -------------------------------------------------
_AT_IMPORT = """
import os, sys
seen = []
class Spy:
    def find_spec(self, name, path=None, target=None):
        if name == "grpc":
            seen.append(os.environ.get("GRPC_EXPERIMENTS"))
        return None
sys.meta_path.insert(0, Spy())
from debvisor_core.rpcd.cli import grpc_for_serving
grpc_for_serving()
print(repr((seen, os.environ.get("GRPC_EXPERIMENTS"))))
"""


@pytest.mark.parametrize(("given", "at_import"), [
    (None, "-event_engine_listener"),
    ("", "-event_engine_listener"),
    ("-event_engine_client", "-event_engine_client,-event_engine_listener"),
    ("event_engine_listener", "event_engine_listener")])  # the operator turned it on
def test_rpcd_serve_imports_grpc_with_its_experiments_and_leaves_the_environment(
        given: str | None, at_import: str) -> None:
    """`rpcd serve`'s listeners use grpc's classic I/O (the EventEngine listener cost ~40 µs
    a call, bench/bench_rpcd.py) added to what the operator's GRPC_EXPERIMENTS says,
    unless it names that experiment; grpc reads it once, at import, and the environment
    the daemon's children inherit is the operator's."""
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if k != "GRPC_EXPERIMENTS"}
    if given is not None:
        env["GRPC_EXPERIMENTS"] = given
    out = subprocess.run([sys.executable, "-c", _AT_IMPORT], env=env, capture_output=True,
                         text=True, check=True).stdout
    assert out == repr(([at_import], given)) + "\n"


@pytest.mark.parametrize("args", [["upgrade", "status", "--bogus"], ["upgrade", "reboot"],
                                  ["--yes", "upgrade", "reboot", "--if-needed", "x"],
                                  ["upgrade", "status", "--for-operation", "--if-needed"],
                                  ["nope"]])
def test_the_grpc_transport_refuses_what_it_cannot_map_before_calling(args: list[str]) -> None:
    """Anything but the step's own commands is exit 2 — no call reaches the node."""
    from debvisor_core.rpcd.transport import GrpcTransport

    class NoClient:
        def __getattr__(self, name: str) -> Any:
            raise AssertionError(f"the node was called: {name}")

    code, out, err = GrpcTransport("node1", NoClient()).run(args, None, 5)  # type: ignore[arg-type]
    assert (code, out) == (2, "") and err.startswith("[ERROR] the grpc transport cannot run")


def test_a_call_has_the_deadline_it_was_given_when_it_started(monkeypatch: pytest.MonkeyPatch) -> None:
    """The budget is what the client's deadline left when the call started, at most the
    limit: read at the end (what grpc's time_remaining says then), a call that used 1.2 s
    of its 2 s was refused as over a 0.8 s deadline."""
    import types

    from debvisor_core.rpcd import server

    now = [100.0]
    monkeypatch.setattr(server, "time", types.SimpleNamespace(monotonic=lambda: now[0], time=time.time))

    class Ctx:
        aborted: tuple[Any, str] | None = None

        def time_remaining(self) -> float:
            return max(2.0 - (now[0] - 100.0), 0.0)  # the client asked for 2 s

        def abort(self, code: Any, why: str) -> None:
            self.aborted = (code, why)
            raise RuntimeError(why)

    ctx = Ctx()
    end = server.deadline(ctx, 60.0)  # type: ignore[arg-type]
    now[0] += 1.2
    server.in_time(ctx, end, "q")  # type: ignore[arg-type]
    assert ctx.aborted is None
    now[0] += 1.0
    with pytest.raises(RuntimeError):
        server.in_time(ctx, end, "q")  # type: ignore[arg-type]
    assert ctx.aborted == (grpc.StatusCode.DEADLINE_EXCEEDED, "q ran longer than the call's deadline (2 s)")
    now[0] = 100.0
    assert server.deadline(ctx, 0.5)[1] == 0.5  # the limit, when the client gives more
