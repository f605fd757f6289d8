"""Live migration between the lab's two real libvirtd nodes (QEMU/TCG guests).

One guest is shared by the whole module (booting and migrating on TCG is slow); each test
leaves it running somewhere and the next one starts from wherever it is.
"""

from __future__ import annotations

import signal
import sys
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from debvisor_libvirt import lab

VM = "hvmig"
pytestmark = [pytest.mark.lab, pytest.mark.root]


@pytest.fixture(scope="module")
def guest(hv_lab: Any) -> Iterator[Path]:
    hv_lab.remove(VM)
    log = hv_lab.guest(VM, "node1")
    yield log
    hv_lab.remove(VM)


PANIC = "Kernel panic"


def _panicked(log: Path) -> bool:
    return PANIC in log.read_text(errors="replace")


@pytest.fixture(autouse=True)
def _one_more_try_after_a_guest_panic(hv_lab: Any, guest: Path) -> Iterator[None]:
    """A TCG guest kernel that panics is a QEMU/guest fault, not this tool's: the test that
    saw it runs once more, on a new guest, and must pass then; a second panic fails it.

    Seen twice in CI, each after a bandwidth-limited migration of the lab's TCG guest (slab
    free-list and timer-list corruption in the guest kernel, on the source after an abort
    and on the target after a completed migration); debvisor only reads guest memory
    (``pmemsave`` samples, QEMU's page-sampling dirty rate), and a dozen repeats in a row
    did not reproduce it. The panic is a warning in pytest's summary and counted in
    ``hv-migrate-guest-panics.txt`` beside the lab's logs, so it is never silent.
    """
    if _panicked(guest):  # left over from an earlier test: start from a live guest
        _new_guest(hv_lab)
    yield


def _new_guest(hv_lab: Any) -> None:
    hv_lab.remove(VM)
    hv_lab.guest(VM, "node1")


def _fresh_state() -> None:
    """Forget what the failed try learned (journal, migration history); keep the config."""
    import os
    import shutil

    state = Path(os.environ["DEBVISOR_STATE_DIR"])
    for entry in state.iterdir():
        if entry.name != "debvisor.toml":
            shutil.rmtree(entry) if entry.is_dir() else entry.unlink()


def _retry_on_guest_panic(test: Any) -> Any:
    """Run ``test`` once more on a new guest when the guest kernel panicked during it."""
    import functools

    @functools.wraps(test)
    def run(*args: Any, **kwargs: Any) -> None:
        guest, hv_lab = kwargs["guest"], kwargs["hv_env"]
        try:
            test(*args, **kwargs)
            return
        except Exception:  # an assertion, or libvirt's error about a crashed domain
            if not _panicked(guest):
                raise
            tail = "\n".join(guest.read_text(errors="replace").splitlines()[-6:])
            with open(hv_lab.dir / "hv-migrate-guest-panics.txt", "a") as f:
                f.write(f"{test.__name__}: {tail}\n")
            warnings.warn(f"the guest kernel panicked during {test.__name__}; once more on a "
                          f"new guest:\n{tail}", stacklevel=1)
        _fresh_state()
        _new_guest(hv_lab)
        test(*args, **kwargs)

    return run


def _other(node: str) -> str:
    return "node2" if node == "node1" else "node1"


def _beats_after(log: Path, n: int, timeout: float = 20) -> None:
    """The guest prints new heartbeats (it is alive, not just 'running')."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if max(lab.console_heartbeats(log), default=0) > n + 1:
            return
        time.sleep(0.2)
    beats = lab.console_heartbeats(log)
    restarted = f"; the guest restarted (the last heartbeat is #{beats[-1]})" \
        if beats and beats[-1] < n else ""
    tail = "\n".join(log.read_text(errors="replace").splitlines()[-15:])
    raise AssertionError(f"no new heartbeat after #{n} in {timeout}s{restarted}; "
                         f"the console's last lines:\n{tail}")


def _journal(dv: Any, res: Any) -> str:
    """The operation's journal named in a failed run's output (for the failure message)."""
    import re

    ids = re.findall(r"[0-9]{8}-[0-9]{6}-[0-9a-f]{6}", res.stderr)
    return str(dv("ops", "show", ids[-1])) if ids else "(no operation id in the output)"


def _daemon_errors(hv_env: Any, since: str) -> str:
    """The lab libvirtds' error lines logged since ``since`` (a "YYYY-MM-DD HH:MM:SS" stamp)."""
    lines = []
    for log in sorted(hv_env.dir.glob("libvirt/node*/libvirtd.log")):
        lines += [f"{log.parent.name}: {line}" for line in log.read_text(errors="replace")
                  .splitlines() if line[:19] >= since]
    return "\n".join(lines[-30:]) or "(none)"


@_retry_on_guest_panic
def test_migrate_there_and_back(dv: Any, hv_env: Any, guest: Path) -> None:
    src = hv_env.where(VM)[0]
    dst = _other(src)
    check = dv("hv", "migrate", VM, dst, "--check")
    assert check.code == 0, check
    assert "downtime ~" in check.stderr and "(limit 300 ms)" in check.stderr
    beat = max(lab.console_heartbeats(guest))
    res = dv("--json", "hv", "migrate", VM, dst, "--yes")
    assert res.code == 0, res
    out = res.json
    assert out["status"] == "succeeded"
    mig = out["result"]["migration"]
    assert (mig["source"], mig["target"]) == (src, dst)
    assert mig["downtime_ms"] is not None and mig["downtime_ms"] < 300
    assert hv_env.where(VM) == [dst]
    assert VM not in [d.name() for d in hv_env.conn(src).listAllDomains()]  # undefined there
    # a fresh state: no stop time of any source known yet; this one measured src's
    assert mig["finish_prior_s"] is None and mig["finish_s"] > 0, mig
    _beats_after(guest, beat)
    listed = dv("--json", "hv", "list", "--filter", "running")
    assert {(v["name"], v["node"]) for v in listed.json["vms"]} >= {(VM, dst)}
    back = dv("--json", "hv", "migrate", VM, src, "--yes")
    assert back.code == 0, back
    assert back.json["result"]["migration"]["target"] == src
    # dst never migrated a VM away: src's measured stop time stands in for it
    assert back.json["result"]["migration"]["finish_prior_s"] == mig["finish_s"]
    assert hv_env.where(VM) == [src]
    _beats_after(guest, max(lab.console_heartbeats(guest)))


@_retry_on_guest_panic
def test_bandwidth_is_respected(dv: Any, hv_env: Any, guest: Path) -> None:
    src = hv_env.where(VM)[0]
    dst = _other(src)
    res = dv("--json", "hv", "migrate", VM, dst, "--bandwidth", "64Mbps", "--yes")
    assert res.code == 0, res
    mig = res.json["result"]["migration"]
    limit = 8 * 1024 * 1024  # 64 Mbit/s = 7.6 MiB/s -> libvirt's whole MiB/s: 8
    assert res.json["steps"][0]["description"].count("bandwidth 8 MiB/s") == 1
    assert 0.5 * limit < mig["avg_rate_bps"] <= 1.1 * limit, mig["avg_rate_bps"]
    samples = [p["bps"] for p in mig["progress"] if p["bps"]]
    assert samples and max(samples) <= 1.1 * limit
    # nothing learned in this fresh state: the ETA says it is to the switch-over
    assert {p["eta_to"] for p in mig["progress"]} == {"switch-over"}
    assert hv_env.where(VM) == [dst]
    _beats_after(guest, max(lab.console_heartbeats(guest)))


@_retry_on_guest_panic
def test_ctrl_c_aborts_and_vm_keeps_running_on_source(dv: Any, hv_env: Any, guest: Path) -> None:
    src = hv_env.where(VM)[0]
    dst = _other(src)
    proc = dv.popen("hv", "migrate", VM, dst, "--bandwidth", "2MiB/s", "--yes")
    dom = hv_env.conn(src).lookupByName(VM)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:  # wait until the migration is really under way
        info = dom.jobInfo()
        if info[0] != 0 and info[4] > 2 * 1024 * 1024:  # type, processed bytes
            break
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.1)
    else:
        raise AssertionError("the migration job never started")
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 4, err
    assert "aborting the migration" in err and "interrupted" in err, err
    assert hv_env.where(VM) == [src]
    assert VM not in [d.name() for d in hv_env.conn(dst).listAllDomains()]
    _beats_after(guest, max(lab.console_heartbeats(guest)))


@_retry_on_guest_panic
def test_timeout_aborts(dv: Any, hv_env: Any, guest: Path) -> None:
    # The timeout falls well inside the transfer (~70 s at 1 MiB/s), as Ctrl-C does above:
    # an abort in the migration's first second was twice ignored by libvirt on CI.
    src = hv_env.where(VM)[0]
    since = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime())
    res = dv("hv", "migrate", VM, _other(src), "--bandwidth", "1MiB/s", "--timeout", "6s",
             "--yes")
    why = (f"{res}\n--- the journal\n{_journal(dv, res)}\n"
           f"--- libvirtd errors\n{_daemon_errors(hv_env, since)}")
    assert res.code == 4, why
    assert f"did not finish within 6s; aborted, it still runs on {src}" in res.stderr, why
    assert hv_env.where(VM) == [src]


@_retry_on_guest_panic
def test_tls_migration_uses_the_lab_pki(dv: Any, hv_env: Any, guest: Path) -> None:
    """--tls encrypts the stream with QEMU's TLS (the lab's CA, server and client certificates):
    without the CA the migration cannot start and the VM stays put; with it, it moves."""
    src = hv_env.where(VM)[0]
    dst = _other(src)
    ca = Path(hv_env.config["hv"]["lab"]["migration_tls_dir"]) / "ca-cert.pem"
    hidden = ca.with_name("ca-cert.pem.hidden")
    ca.rename(hidden)
    try:
        res = dv("hv", "migrate", VM, dst, "--tls", "--yes")
        assert res.code == 4, res
        assert "ca-cert.pem" in res.stderr, res.stderr
        assert hv_env.where(VM) == [src]
    finally:
        hidden.rename(ca)
    res = dv("--json", "hv", "migrate", VM, dst, "--tls", "--yes")
    assert res.code == 0, res
    assert res.json["steps"][0]["description"].endswith(", TLS)")
    assert hv_env.where(VM) == [dst]
    _beats_after(guest, max(lab.console_heartbeats(guest)))


@_retry_on_guest_panic
def test_tls_control_connections(dv: Any, dv_state: Any, hv_env: Any, guest: Path) -> None:
    """qemu+tls:// to both nodes — libvirtd's TLS listener, the lab PKI, the client certificate
    found through the URI's pkipath — from a shell on node1's network: list and migrate work;
    without the client key libvirtd refuses the client, and the error gives libvirt's reason."""
    tls = hv_env.config["hv"]["lab"]["tls_uris"]
    dv_state.config({"hv": {"nodes": {n: {"uri": u} for n, u in tls.items()}}}, base=hv_env.config_path)
    prog = ["ip", "netns", "exec", hv_env.config["hv"]["nodes"]["node1"]["netns"], sys.executable, "-m",
            "debvisor_core"]
    src = hv_env.where(VM)[0]
    listed = dv("--json", "hv", "list", prog=prog)
    assert listed.code == 0, listed
    assert (VM, src) in {(v["name"], v["node"]) for v in listed.json["vms"]}
    res = dv("hv", "migrate", VM, _other(src), "--yes", prog=prog)
    assert res.code == 0, res
    assert hv_env.where(VM) == [_other(src)]
    key = Path(tls["node1"].split("pkipath=")[1]) / "clientkey.pem"
    hidden = key.with_name("clientkey.pem.hidden")
    key.rename(hidden)
    try:
        res = dv("hv", "migrate", VM, src, "--check", prog=prog)  # libvirtd refuses a client
        assert res.code == 3, res                                   # without a certificate
        assert f"no VM named '{VM}' on any node (), and node node1 (qemu+tls://" in res.stderr
        assert "is unreachable: Unable to read TLS confirmation" in res.stderr, res.stderr
    finally:
        hidden.rename(key)
    _beats_after(guest, max(lab.console_heartbeats(guest)))


@_retry_on_guest_panic
def test_failure_after_switchover_migrates_back(dv: Any, dv_fault: Any, hv_env: Any,
                                                 guest: Path) -> None:
    src = hv_env.where(VM)[0]
    dst = _other(src)
    dv_fault("MigrateVM:after")
    res = dv("hv", "migrate", VM, dst, "--yes")
    assert res.code == 4, res
    assert f"migrating {VM} back to {src}" in res.stderr
    assert "every applied step was undone" in res.stderr
    assert hv_env.where(VM) == [src]
    _beats_after(guest, max(lab.console_heartbeats(guest)))


def test_precheck_refuses_name_clash(dv: Any, hv_env: Any, guest: Path,
                                     guest_factory: Any) -> None:
    src = hv_env.where(VM)[0]
    dst = _other(src)
    from debvisor_libvirt.lab import guest_xml

    g = hv_env.config["hv"]["guest"]
    hv_env.conn(dst).defineXML(guest_xml(VM, kernel=g["kernel"], initrd=g["initrd"]))
    try:
        res = dv("hv", "migrate", VM, dst, "--check")
        assert res.code == 3, res
        assert f"{dst} already has a domain named {VM}" in res.stderr
    finally:
        hv_env.conn(dst).lookupByName(VM).undefine()


def test_dry_run_prints_the_plan_and_migrates_nothing(dv: Any, hv_env: Any, guest: Path) -> None:
    src = hv_env.where(VM)[0]
    dst = _other(src)
    res = dv("hv", "migrate", VM, dst, "--dry-run")
    assert res.code == 0, res
    assert f"Plan: migrate {VM} from {src} to {dst}" in res.stdout
    assert f"live-migrate {VM}: {src} -> {dst} (bandwidth unlimited, max downtime 300 ms" \
        in res.stdout
    assert "dry run: nothing was changed" in res.stderr
    assert "estimated downtime" in res.stdout
    js = dv("--json", "hv", "migrate", VM, dst, "--dry-run", "--max-downtime", "150ms")
    assert js.code == 0, js
    assert js.json["status"] == "dry-run" and js.json["id"] == ""
    est = js.json["result"]["estimate"]
    assert est["memory_bytes"] == 128 * 2**20 and est["downtime_s"] > 0
    assert any("(limit 150 ms)" in f["message"] for f in js.json["findings"])
    assert hv_env.where(VM) == [src]
    assert VM not in [d.name() for d in hv_env.conn(dst).listAllDomains()]


def test_check_runs_only_the_preflight(dv: Any, hv_env: Any, guest: Path) -> None:
    src = hv_env.where(VM)[0]
    dst = _other(src)
    res = dv("--json", "hv", "migrate", VM, dst, "--check")
    assert res.code == 0, res
    assert res.json["status"] == "checked"
    assert [f["level"] for f in res.json["findings"]] in (["info"], ["warn"])
    assert "preflight passed for hv.migrate; nothing was changed (--check)" in res.stderr
    assert hv_env.where(VM) == [src]


def test_unknown_target_node_is_bad_input(dv: Any, hv_env: Any, guest: Path) -> None:
    res = dv("hv", "migrate", VM, "node9", "--yes")
    assert res.code == 2, res
    assert "unknown node 'node9'; configured nodes: node1, node2" in res.stderr
    assert "Traceback" not in res.stderr
    res = dv("hv", "migrate", VM, "node2", "--bandwidth", "fast", "--yes")
    assert res.code == 2 and "bad bandwidth 'fast'" in res.stderr, res


def test_precheck_refuses_when_target_lacks_memory(dv: Any, dv_state: Any, hv_env: Any,
                                                   guest: Path) -> None:
    """The target's real free memory minus a reserve larger than it cannot hold the VM."""
    src = hv_env.where(VM)[0]
    dst = _other(src)
    free_mib = hv_env.conn(dst).getFreeMemory() // 2**20
    reserve = free_mib  # the VM's 128 MiB no longer fit
    dv_state.config({"hv": {"migration": {"memory_reserve_mib": reserve}}},
                    base=hv_env.config_path)
    res = dv("hv", "migrate", VM, dst, "--yes")
    assert res.code == 3, res
    line = next(ln for ln in res.stderr.splitlines() if "MiB free" in ln)
    assert f"{dst} has " in line and f"{VM} needs 128 MiB + {reserve} MiB reserve" in line
    assert "nothing was changed" in res.stderr
    assert hv_env.where(VM) == [src]
    assert VM not in [d.name() for d in hv_env.conn(dst).listAllDomains()]


def test_precheck_refuses_the_same_host_under_another_name(dv: Any, dv_state: Any, hv_env: Any,
                                                           guest: Path) -> None:
    """A second node name for the source's own daemon: same host name, same host UUID."""
    src = hv_env.where(VM)[0]
    alias = dict(hv_env.config["hv"]["nodes"][src])
    dv_state.config({"hv": {"nodes": {"again": alias}}}, base=hv_env.config_path)
    res = dv("hv", "migrate", VM, "again", "--check")
    assert res.code == 3, res
    assert f"{src} and again are the same libvirt host (same host UUID)" in res.stderr
    assert hv_env.where(VM) == [src]


@_retry_on_guest_panic
def test_maintenance_drain_evacuates_the_node_and_disable_brings_the_vm_back(
        dv: Any, dv_state: Any, hv_env: Any, guest: Path) -> None:
    """`maintenance enable --drain` on a hypervisor (`[hv] node`): its running VMs are
    live-migrated away, maintenance holds only once the node is empty, and `maintenance
    disable` migrates them back; the guest keeps running throughout."""
    src = hv_env.where(VM)[0]
    dst = _other(src)
    dv_state.config({"hv": {"node": src}}, base=hv_env.config_path)
    dry = dv("maintenance", "enable", "--drain", "--reason", "disk swap", "--dry-run")
    assert dry.code == 0, dry
    assert f"live-migrate {VM}: {src} -> {dst}" in dry.stdout
    assert f"check that {src} runs no VM" in dry.stdout and hv_env.where(VM) == [src]
    beat = max(lab.console_heartbeats(guest))
    res = dv("--json", "maintenance", "enable", "--drain", "--reason", "disk swap", "--yes")
    try:
        assert res.code == 0, (res, _journal(dv, res))
        names = [s["name"] for s in res.json["steps"]]  # with the lab's Ceph: noout too
        assert names[0] == "EnterMaintenance" and names[-1] == "VerifyNoVMs", names
        assert names.index("EvacuateVM") == 1
        assert hv_env.where(VM) == [dst]
        _beats_after(guest, beat)
        assert dv("--json", "maintenance", "status").json["enabled"] is True
    finally:
        off = dv("--json", "maintenance", "disable")
    assert off.code == 0 and off.json["rolled_back"] == res.json["id"], off
    assert hv_env.where(VM) == [src]
    _beats_after(guest, max(lab.console_heartbeats(guest)))
    assert dv("--json", "maintenance", "status").json["enabled"] is False
