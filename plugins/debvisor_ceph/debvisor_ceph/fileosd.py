"""File-backed BlueStore OSDs: create, start-command and purge, through python-rados.

Building blocks shared by the lab cluster and the file-backed provisioner of
``ceph join``. An OSD's data dir holds its keyring and a ``block`` symlink to a
sparse file that lives *outside* the dir (so the data dir can be recreated and
the block file survives a SIGKILL like a disk would).
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from debvisor_core.errors import DebvisorError

GiB = 1024**3
DEFAULT_BLOCK_SIZE = 2 * GiB
OSD_CAPS = ["mon", "allow profile osd", "mgr", "allow profile osd", "osd", "allow *"]


class CephCommandError(DebvisorError):
    """A Ceph mon/mgr command or a Ceph tool failed."""


@contextlib.contextmanager
def connect(
    conf_path: Path | str,
    keyring_path: Path | str,
    client: str = "client.admin",
    *,
    timeout: float = 15.0,
) -> Iterator[Any]:
    """A connected ``rados.Rados`` handle (shut down on exit)."""
    import rados  # Debian's python3-rados; imported lazily so the plugin loads without it

    name = client if client.startswith("client.") else f"client.{client}"
    cluster = rados.Rados(
        conffile=str(conf_path),
        name=name,
        conf={"keyring": str(keyring_path), "client_mount_timeout": str(int(timeout))},
    )
    try:
        cluster.connect(timeout=int(timeout))
    except rados.Error as exc:
        cluster.shutdown()
        raise CephCommandError(f"cannot connect to the Ceph cluster: {exc}") from exc
    try:
        yield cluster
    finally:
        cluster.shutdown()


def mon_command(cluster: Any, prefix: str, *, inbuf: bytes = b"", timeout: int = 30, **args: Any) -> str:
    """Run a mon command (``args`` use Ceph's argument names); return its output text."""
    cmd = {"prefix": prefix, **args}
    ret, out, err = cluster.mon_command(json.dumps(cmd), inbuf, timeout=timeout)
    if ret != 0:
        raise CephCommandError(f"ceph {prefix} failed ({ret}): {err.strip() or out!r}")
    return out.decode() if isinstance(out, bytes) else str(out)


def mon_json(cluster: Any, prefix: str, *, timeout: int = 30, **args: Any) -> Any:
    """Run a mon command with ``format=json`` and return the decoded result."""
    out = mon_command(cluster, prefix, timeout=timeout, format="json", **args)
    return json.loads(out) if out.strip() else None


def osd_argv(conf_path: Path | str, osd_id: int, data_dir: Path | str) -> list[str]:
    """The foreground ``ceph-osd`` command line for an OSD made by :func:`create_file_osd`."""
    data = Path(data_dir)
    return [
        "ceph-osd", "-f", "-c", str(conf_path), "-i", str(osd_id),
        "--osd-data", str(data), "--keyring", str(data / "keyring"),
    ]  # fmt: skip


def create_file_osd(
    conf_path: Path | str,
    keyring_path: Path | str,
    data_dir: Path | str,
    block_path: Path | str,
    *,
    host: str,
    weight: float | None = None,
    device_class: str | None = None,
    block_size: int = DEFAULT_BLOCK_SIZE,
    client: str = "client.admin",
    root: str = "default",
    osd_id: int | None = None,
    timeout: float = 120.0,
) -> int:
    """Create a BlueStore OSD on a sparse file and place it under ``host`` in CRUSH.

    Registers the OSD (``osd new``), makes its cephx key, runs ``ceph-osd --mkfs``
    (which creates ``block_path`` of ``block_size`` bytes and links ``data_dir/block``
    to it), then adds it to CRUSH at ``host=<host> root=<root>`` with ``weight``
    (default: size in TiB) and ``device_class``. ``osd_id`` asks for a given id
    (``osd new`` fails if it is taken); by default the mon picks one. The OSD is
    left stopped; start it with :func:`osd_argv`. On failure the half-made OSD is
    purged. Returns its id.

    A daemon started on another host should have ``osd crush update on start = false``
    or a matching ``crush location`` so it stays where it was put.
    """
    data, block = Path(data_dir), Path(block_path)
    if block.resolve().is_relative_to(data.resolve()):
        raise CephCommandError(f"block file {block} must live outside the OSD dir {data}")
    if data.exists() and any(data.iterdir()):
        raise CephCommandError(f"OSD dir {data} is not empty")
    if block.exists():
        raise CephCommandError(f"block file {block} already exists")
    osd_uuid = str(uuid.uuid4())
    with connect(conf_path, keyring_path, client) as cluster:
        want = {} if osd_id is None else {"id": osd_id}
        osd_id = int(mon_json(cluster, "osd new", uuid=osd_uuid, **want)["osdid"])
        try:
            key = mon_command(cluster, "auth get-or-create", entity=f"osd.{osd_id}", caps=OSD_CAPS)
            data.mkdir(parents=True, exist_ok=True)
            block.parent.mkdir(parents=True, exist_ok=True)
            keyring = data / "keyring"
            keyring.write_text(key if key.endswith("\n") else key + "\n")
            keyring.chmod(0o600)
            _mkfs(conf_path, osd_id, osd_uuid, data, block, block_size, timeout)
            wt = weight if weight is not None else round(block_size / 1024**4, 5)
            mon_command(
                cluster,
                "osd crush add",
                id=osd_id,
                weight=wt,
                args=[f"host={host}", f"root={root}"],
            )
            if device_class:
                dev_class: dict[str, Any] = {"class": device_class, "ids": [f"osd.{osd_id}"]}
                mon_command(cluster, "osd crush set-device-class", **dev_class)
        except BaseException:
            with contextlib.suppress(Exception):
                _purge(cluster, osd_id)
            with contextlib.suppress(OSError):
                block.unlink()
            raise
    return osd_id


def _mkfs(
    conf: Path | str, osd_id: int, osd_uuid: str, data: Path, block: Path, size: int, timeout: float
) -> None:
    argv = [
        "ceph-osd", "-c", str(conf), "-i", str(osd_id), "--mkfs", "--osd-uuid", osd_uuid,
        "--osd-data", str(data), "--keyring", str(data / "keyring"),
        "--osd-objectstore", "bluestore", "--bluestore-block-path", str(block),
        "--bluestore-block-create", "true", "--bluestore-block-size", str(size),
    ]  # fmt: skip
    res = subprocess.run(  # noqa: S603 - argument list, no shell
        argv, capture_output=True, text=True, timeout=timeout, env={**os.environ}
    )
    if res.returncode != 0:
        lines = (res.stderr or res.stdout).strip().splitlines()
        raise CephCommandError(
            f"ceph-osd --mkfs for osd.{osd_id} failed: {lines[-1] if lines else res.returncode}"
        )


def _purge(cluster: Any, osd_id: int) -> None:
    # `osd purge` is a mgr command (safe-to-destroy check first) that forwards `osd purge-actual`
    # to the mons; the mon command removes the CRUSH entry, the cephx key and the OSD id.
    mon_command(cluster, "osd purge-actual", id=osd_id, yes_i_really_mean_it=True)


def purge_osd(
    conf_path: Path | str, keyring_path: Path | str, osd_id: int, client: str = "client.admin"
) -> None:
    """Remove a (stopped) OSD from the cluster: CRUSH entry, cephx key and OSD map entry."""
    with connect(conf_path, keyring_path, client) as cluster:
        mon_command(cluster, "osd down", ids=[str(osd_id)])
        _purge(cluster, osd_id)
