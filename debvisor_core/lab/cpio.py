"""A newc cpio archive (the initramfs format), written in Python: the lab builds its small
initramfs images from a few files without depending on the cpio tool or a root-owned tree."""

from __future__ import annotations

import gzip
import io
from collections.abc import Iterable
from pathlib import Path


def cpio_newc(entries: Iterable[tuple[str, int, bytes, tuple[int, int]]]) -> bytes:
    """A newc cpio archive of ``(name, mode, data, (rdev_major, rdev_minor))`` entries."""
    out = io.BytesIO()

    def pad() -> None:
        out.write(b"\0" * (-out.tell() % 4))

    all_entries = [*entries, ("TRAILER!!!", 0, b"", (0, 0))]
    for ino, (name, mode, data, (rmaj, rmin)) in enumerate(all_entries, start=1):
        raw = name.encode() + b"\0"
        nlink = 2 if mode & 0o170000 == 0o040000 else 1
        fields = (ino, mode, 0, 0, nlink, 0, len(data), 0, 0, rmaj, rmin, len(raw), 0)
        out.write(b"070701" + b"".join(b"%08X" % f for f in fields) + raw)
        pad()
        out.write(data)
        pad()
    return out.getvalue()


def write_initramfs(path: Path, entries: Iterable[tuple[str, int, bytes, tuple[int, int]]]
                    ) -> Path:
    """Write ``entries`` (see :func:`cpio_newc`) to ``path`` as a gzip'd initramfs (mode
    0644), replacing it atomically; returns ``path``."""
    tmp = path.with_suffix(".tmp")
    tmp.write_bytes(gzip.compress(cpio_newc(entries), mtime=0))
    tmp.chmod(0o644)
    tmp.rename(path)
    return path
