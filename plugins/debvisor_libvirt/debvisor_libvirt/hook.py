"""`debvisor hv hook install`: libvirt's QEMU hook script, installed with undo.

The script (:func:`render_script`) goes to ``HOOKS_DIR/qemu`` (``[hv] hooks_dir``,
default ``/etc/libvirt/hooks``), written atomically (a new file renamed over the old),
mode 0755, owned by root. It runs :mod:`debvisor_libvirt.hookevent` with this
installation's interpreter and state directory (libvirt gives hooks a bare environment:
``LC_ALL``, ``PATH`` and ``HOME`` only), which audits VM starts, stops and incoming
migrations and refuses a start or an incoming migration while the node is in maintenance.

A hook that was there before and is not DebVisor's ("foreign") is kept: hard-linked as
``qemu.debvisor-orig`` (the same inode: bytes, mode, owner and times), and DebVisor's
script runs it after its own checks with the same arguments and stdin (and passes its
stdout and exit status on). The undo (``hv hook install --rollback``) renames it back, so
it returns byte for byte; with no earlier hook the undo removes the script, and an
earlier DebVisor script (a reinstall) is written back as it was.

libvirtd looks for hook scripts when it starts: after the first install on a node,
restart libvirtd (or virtqemud); running VMs keep running. Once libvirtd has seen a
script, later changes (a reinstall, the undo) take effect at once.
"""

from __future__ import annotations

import hashlib
import os
import shlex
import stat
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from debvisor_core import log
from debvisor_core.context import Context
from debvisor_core.errors import BadInput, StepFailed
from debvisor_core.model import Step

DEFAULT_HOOKS_DIR = "/etc/libvirt/hooks"
SCRIPT = "qemu"
BACKUP = "qemu.debvisor-orig"
MARKER = "# debvisor-libvirt-hook 1"
"""The second line of every script DebVisor writes: how a reinstall knows its own."""
RESTART_NOTE = ("libvirtd looks for hook scripts only when it starts: restart it "
                "(systemctl restart libvirtd, or virtqemud; running VMs keep running) unless "
                "a qemu hook was already there when it started")


def hooks_dir(ctx: Context) -> Path:
    """``[hv] hooks_dir`` (an absolute path), default /etc/libvirt/hooks."""
    from debvisor_core.settings import Section

    sec = Section.of(ctx, "hv")
    value = sec.string("hooks_dir", DEFAULT_HOOKS_DIR) or DEFAULT_HOOKS_DIR
    if not os.path.isabs(value):
        raise sec.error("hooks_dir", f"must be an absolute path, not {value!r}")
    return Path(value)


def hook_env(ctx: Context) -> dict[str, str]:
    """What the script sets for the hook: where this installation's state and config are
    when they are not the defaults (libvirt runs hooks with a bare environment)."""
    env: dict[str, str] = {}
    if os.environ.get("DEBVISOR_STATE_DIR"):
        env["DEBVISOR_STATE_DIR"] = os.path.abspath(os.environ["DEBVISOR_STATE_DIR"])
    conf = ctx.config_file or os.environ.get("DEBVISOR_CONFIG")
    if conf:
        env["DEBVISOR_CONFIG"] = os.path.abspath(conf)
    return env


def render_script(python: str, env: dict[str, str], chain: str | None) -> str:
    """The hook script: a few lines of sh that exec the hook module."""
    q = shlex.quote
    lines = [
        "#!/bin/sh",
        MARKER,
        "# DebVisor's libvirt QEMU hook, written by `debvisor hv hook install`: do not edit",
        "# (install again to change it; `debvisor hv hook install --rollback --yes` removes it).",
        "# libvirt runs it on every VM lifecycle event (qemu DOMAIN OPERATION SUB-OPERATION",
        "# EXTRA, the domain XML on stdin). It runs `debvisor hv hook-event` through its module",
        "# (a fraction of the CLI's start-up time): start, stop and incoming migration are",
        "# audited; `prepare begin` (any start) and `migrate begin` are refused while this node",
        "# is in maintenance. It never calls back into libvirt and gives up after 5 s.",
    ]
    if chain:
        lines.append(f"# The hook that was here before runs after DebVisor's checks: {chain}")
    lines += [f"{k}={q(v)}; export {k}" for k, v in sorted(env.items())]
    rest = f'exec {q(chain)} "$@"' if chain else "exit 0"
    lines += [
        "# Other events (start begin, release end, reconnect: once per running VM when",
        "# libvirtd restarts, ...) need no Python.",
        'case "$2 $3" in',
        '"prepare begin"|"migrate begin"|"started begin"|"stopped end") ;;',
        f"*) {rest} ;;",
        "esac",
        f"py={q(python)}",
        'if [ ! -x "$py" ]; then',
        '    case "$2" in',
        "    prepare|migrate)",
        '        echo "DebVisor hook: $py is missing; refusing to $2 $1 (reinstall the hook:'
        ' debvisor hv hook install)" >&2',
        "        exit 1 ;;",
        "    esac",
        f"    {rest}",
        "fi",
        'exec "$py" -I -m debvisor_libvirt.hookevent --hook "$0"'
        + (f" --chain {q(chain)}" if chain else "") + ' -- "$@"',
    ]
    return "\n".join(lines) + "\n"


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _fsync_dir(d: Path) -> None:
    fd = os.open(d, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def inspect(path: Path) -> dict[str, Any] | None:
    """What is at ``path``: None, a symlink (``target``) or a regular file (``sha256``,
    ``mode``, ``uid``, ``gid``, ``ours``; DebVisor's own also with its ``content``)."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return None
    if stat.S_ISLNK(st.st_mode):
        return {"type": "symlink", "target": os.readlink(path), "ours": False, "ino": st.st_ino}
    if not stat.S_ISREG(st.st_mode):
        raise StepFailed(f"{path} is neither a file nor a symlink: move it aside first")
    data = path.read_bytes()
    ours = data.split(b"\n")[1:2] == [MARKER.encode()]
    return {"type": "file", "ours": ours, "sha256": _sha(data), "mode": stat.S_IMODE(st.st_mode),
            "uid": st.st_uid, "gid": st.st_gid, "ino": st.st_ino,
            "content": data.decode() if ours else None}


@dataclass
class InstallHook(Step):
    """Install DebVisor's libvirt QEMU hook (undo: the hook that was there before, or none)."""

    TYPE = "hv.hook.install"
    NAME = "InstallHook"

    hooks_dir: str
    python: str
    env: dict[str, str] = field(default_factory=dict)

    @property
    def path(self) -> Path:
        return Path(self.hooks_dir) / SCRIPT

    @property
    def backup(self) -> Path:
        return Path(self.hooks_dir) / BACKUP

    def script(self) -> str:
        """The script as it would be written now (chained when a backup is there)."""
        chain = str(self.backup) if os.path.lexists(self.backup) else None
        return render_script(self.python, self.env, chain)

    def describe(self, ctx: Context) -> str:
        try:
            now = inspect(self.path)
        except StepFailed:
            now = None
        keep = (f"; the hook there now is kept as {BACKUP} and runs after DebVisor's checks"
                if now is not None and not now["ours"] else "")
        return f"install DebVisor's libvirt QEMU hook {self.path} (mode 0755, root){keep}"

    def check(self, ctx: Context) -> None:
        parent = Path(self.hooks_dir).parent
        if not parent.is_dir():
            raise StepFailed(f"{parent} does not exist: is libvirt installed here? ([hv] "
                             f"hooks_dir names where its hooks go)")
        now = inspect(self.path)
        if now is not None and not now["ours"] and os.path.lexists(self.backup):
            raise StepFailed(f"{self.path} is not DebVisor's hook and {self.backup} exists too: "
                             f"move one of them aside (DebVisor keeps the hook it replaces "
                             f"there)")
        env = {**os.environ, **self.env}
        env.pop("PYTHONPATH", None)
        try:
            res = subprocess.run(  # noqa: S603 - argument list
                [self.python, "-I", "-m", "debvisor_libvirt.hookevent", "--check"], env=env,
                capture_output=True, text=True, timeout=30, stdin=subprocess.DEVNULL)
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise StepFailed(f"{self.python} cannot run the hook module: {exc}") from None
        if res.returncode != 0:
            raise StepFailed(f"{self.python} cannot run the hook module: "
                             f"{(res.stderr or res.stdout).strip()[-300:]}")

    def snapshot(self, ctx: Context) -> dict[str, Any]:
        return {"dir_existed": Path(self.hooks_dir).is_dir(), "existing": inspect(self.path),
                "backup_existed": os.path.lexists(self.backup)}

    def apply(self, ctx: Context, prior: dict[str, Any]) -> dict[str, Any]:
        from debvisor_core.statefile import atomic_write

        d = Path(self.hooks_dir)
        d.mkdir(parents=True, exist_ok=True, mode=0o755)
        existing = prior.get("existing")
        created = False
        if existing is not None and not existing["ours"]:
            if prior.get("backup_existed"):
                raise StepFailed(f"{self.backup} exists: not replacing it with {self.path}")
            os.link(self.path, self.backup, follow_symlinks=False)  # the same inode, kept
            created = True
            _fsync_dir(d)
        text = self.script()
        with atomic_write(self.path, 0o755) as f:
            f.write(text.encode())
            if os.geteuid() == 0:
                os.fchown(f.fileno(), 0, 0)
        if existing is None:
            log.warn(RESTART_NOTE)
        return {"written_sha256": _sha(text.encode()), "backup_created": created,
                "chain": str(self.backup) if os.path.lexists(self.backup) else None}

    def verify(self, ctx: Context, record: dict[str, Any]) -> None:
        st = os.lstat(self.path)
        if not stat.S_ISREG(st.st_mode) or stat.S_IMODE(st.st_mode) != 0o755:
            raise StepFailed(f"{self.path} is not a regular file of mode 0755")
        if os.geteuid() == 0 and (st.st_uid, st.st_gid) != (0, 0):
            raise StepFailed(f"{self.path} is not owned by root")
        if _sha(self.path.read_bytes()) != record["written_sha256"]:
            raise StepFailed(f"{self.path} does not hold the script just written")

    def undo(self, ctx: Context, record: dict[str, Any]) -> None:
        """Put back what was there: nothing, the foreign hook (renamed back from its
        backup: byte for byte) or an earlier DebVisor script. A script changed since the
        install is left alone (the rollback is then incomplete: see the message)."""
        from debvisor_core.statefile import atomic_write

        path, backup = self.path, self.backup
        existing = record.get("existing")
        written = record.get("written_sha256")
        cur = inspect(path)
        if written is not None:
            if cur is not None and cur.get("sha256") != written:
                raise StepFailed(
                    f"{path} changed since DebVisor installed its hook; not touching it"
                    + (f" (the hook it replaced is {backup})" if os.path.lexists(backup) else ""))
            ours_there = cur is not None
        else:  # interrupted before the script was written: maybe nothing to undo
            ours_there = cur is not None and bool(cur["ours"]) and (
                existing is None or cur.get("sha256") != existing.get("sha256"))
        if existing is None:
            if ours_there:
                path.unlink()
        elif existing["ours"]:
            if ours_there:
                with atomic_write(path, existing["mode"]) as f:
                    f.write(existing["content"].encode())
                    if os.geteuid() == 0:
                        os.fchown(f.fileno(), existing["uid"], existing["gid"])
        elif os.path.lexists(backup) and not record.get("backup_existed"):
            kept = inspect(backup)
            assert kept is not None
            same = (kept.get("target") == existing.get("target") if existing["type"] == "symlink"
                    else kept.get("sha256") == existing.get("sha256"))
            if not same:
                raise StepFailed(f"{backup} no longer holds the hook DebVisor replaced "
                                 f"(sha256 {existing.get('sha256')}); restore {path} by hand")
            if cur is not None and cur.get("ino") == kept.get("ino"):
                backup.unlink()  # interrupted right after the link: the original is in place
            else:
                os.replace(backup, path)
        elif cur is None or cur.get("ino") != existing.get("ino"):
            raise StepFailed(f"the hook DebVisor replaced in {path} is gone: {backup} is missing")
        _fsync_dir(path.parent)
        if not record.get("dir_existed"):
            try:
                path.parent.rmdir()
            except OSError:
                pass


def install_step(ctx: Context) -> InstallHook:
    """The step installing this installation's hook (its interpreter, state and config)."""
    d = hooks_dir(ctx)
    python = sys.executable
    if not python or not os.path.isabs(python):
        raise BadInput("cannot tell which Python interpreter runs DebVisor (sys.executable)")
    return InstallHook(str(d), python, hook_env(ctx))


def up_to_date(step: InstallHook) -> bool:
    """The installed script is DebVisor's, exactly as it would be written now."""
    try:
        now = inspect(step.path)
    except StepFailed:
        return False
    return bool(now and now["ours"] and now["content"] == step.script())
