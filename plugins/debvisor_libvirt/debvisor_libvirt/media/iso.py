"""NoCloud seed ISOs with pycdlib: write (temp name, fsync, rename) and read back."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

from debvisor_core.errors import BadInput
from debvisor_core.statefile import atomic_write

LABEL = "cidata"
ORDER = ("user-data", "meta-data", "network-config", "vendor-data")


def _iso_name(name: str) -> str:
    return "/" + name.upper().replace("-", "_") + ".;1"


def write_iso(files: dict[str, bytes], output: str | Path, *, label: str = LABEL,
              mode: int = 0o600) -> None:
    """Write an ISO 9660 + Joliet + Rock Ridge image holding ``files`` to ``output`` atomically,
    with ``mode`` (seeds hold tokens and keys: owner-only by default). The image is written to a
    new file (``mkstemp``: ``O_EXCL``) and renamed over ``output``, so a symlink planted there is
    replaced, never followed."""
    import pycdlib

    out = Path(output)
    iso = pycdlib.PyCdlib()
    iso.new(interchange_level=3, joliet=3, rock_ridge="1.09", vol_ident=label,
            app_ident_str="DebVisor hv iso build")
    for name in sorted(files, key=lambda n: ORDER.index(n) if n in ORDER else len(ORDER)):
        data = files[name]
        iso.add_fp(io.BytesIO(data), len(data), _iso_name(name), rr_name=name, joliet_path="/" + name)
    try:
        with atomic_write(out, mode) as f:
            iso.write_fp(f)
    finally:
        iso.close()


def read_iso(path: str | Path) -> dict[str, Any]:
    """Label, extensions and every file (name, size, bytes) of an ISO image."""
    import pycdlib
    from pycdlib.pycdlibexception import PyCdlibException

    iso = pycdlib.PyCdlib()
    try:
        iso.open(str(path))
    except (PyCdlibException, OSError) as exc:
        raise BadInput(f"{path} is not a readable ISO 9660 image: {exc}") from None
    try:
        rr = iso.has_rock_ridge() is not None and bool(iso.has_rock_ridge())
        joliet = bool(iso.has_joliet())
        label = iso.pvd.volume_identifier.decode("ascii", "replace").strip()
        files = []
        facade = iso.get_rock_ridge_facade() if rr else (iso.get_joliet_facade() if joliet else None)
        for child in iso.list_children(iso_path="/"):
            if child.is_dot() or child.is_dotdot() or child.is_dir():
                continue
            iso_name = child.file_identifier().decode()
            name = iso_name
            if rr and child.rock_ridge is not None:
                name = child.rock_ridge.name().decode()
            buf = io.BytesIO()
            if facade is not None and name != iso_name:
                facade.get_file_from_iso_fp(buf, "/" + name)
            else:
                iso.get_file_from_iso_fp(buf, iso_path="/" + iso_name)
            files.append({"name": name, "iso_name": iso_name, "data": buf.getvalue()})
        return {"label": label, "joliet": joliet, "rock_ridge": rr, "files": files}
    finally:
        iso.close()
