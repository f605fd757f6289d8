"""The diagnostics bundle of ``debvisor health --collect-diagnostics PATH.tar.gz``."""

from __future__ import annotations

import io
import os
import subprocess
import tarfile
import time
from collections.abc import Sequence
from pathlib import Path


class DiagnosticsBundle:
    """Collects files, texts and command outputs into a gzip'd tar archive."""

    def __init__(self, path: Path, prefix: str = "debvisor-diagnostics") -> None:
        self.path = path
        self.prefix = prefix
        self.items: list[str] = []
        self._tmp = path.with_name(f".{path.name}.{os.urandom(6).hex()}.partial")
        # owner-only, and never a file someone planted: the bundle holds the recent audit
        # log and the (redacted) config
        fd = os.open(self._tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
        self._file = os.fdopen(fd, "wb")
        self._tar = tarfile.open(fileobj=self._file, mode="w:gz")

    def add_text(self, name: str, text: str) -> None:
        data = text.encode()
        info = tarfile.TarInfo(f"{self.prefix}/{name}")
        info.size = len(data)
        info.mtime = int(time.time())
        info.mode = 0o600
        self._tar.addfile(info, io.BytesIO(data))
        self.items.append(name)

    def add_file(self, path: str | Path, name: str | None = None) -> None:
        p = Path(path)
        try:
            self.add_text(name or f"files/{p.name}", p.read_text(errors="replace"))
        except OSError as exc:
            self.add_text((name or f"files/{p.name}") + ".error", f"{exc}\n")

    def add_command(self, name: str, argv: Sequence[str], timeout: float = 20) -> None:
        try:
            res = subprocess.run(  # noqa: S603 - argument list, no shell
                list(argv), capture_output=True, text=True, timeout=timeout
            )
            text = f"$ {' '.join(argv)}\nexit {res.returncode}\n{res.stdout}{res.stderr}"
        except (OSError, subprocess.TimeoutExpired) as exc:
            text = f"$ {' '.join(argv)}\nfailed: {exc}\n"
        self.add_text(f"commands/{name}.txt", text)

    def close(self) -> None:
        self._tar.close()
        self._file.close()
        self._tmp.replace(self.path)

    def abort(self) -> None:
        self._tar.close()
        self._file.close()
        self._tmp.unlink(missing_ok=True)
