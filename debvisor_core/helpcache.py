"""`debvisor --help` and `debvisor WORD --help` from a cache, without importing click.

Click alone costs about 13 ms (inspect, uuid, datetime, its types) of a 40 ms `--help`.
The help text depends only on the installed distributions, the plugin selection, the
terminal width and the source files that render it, so the first run renders it with
click and stores it with that key; later runs print it after a few ``stat`` calls. The key
holds discovery's fingerprint (interpreter, every ``sys.path`` entry's mtime: installing or
removing a distribution changes it), DEBVISOR_PLUGINS / DEBVISOR_DISABLE_PLUGINS, the
width click would use, and the mtime of every debvisor module the rendering imported (so
editing a plugin's help in an editable install is seen at once). Anything else — another
argument, an alias, a cache that cannot be read or written — takes the normal path.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from .discovery import cache_file, installation_key, module_sources, sources_ok, store

HELP = ("--help", "-h")


def _eligible(argv: list[str]) -> bool:
    if os.environ.get("DEBVISOR_ALIAS") or os.environ.get("DEBVISOR_NO_HELP_CACHE"):
        return False
    if len(argv) == 1:
        return argv[0] in HELP
    return (len(argv) == 2 and argv[1] in HELP and argv[0].isascii()
            and argv[0].replace("-", "").isalnum())


def _width() -> str:
    """What click's formatter would use: COLUMNS, else the terminal's width, capped at 80."""
    cols = os.environ.get("COLUMNS", "")
    if not cols.isdigit():
        try:
            cols = str(os.get_terminal_size(sys.__stdout__.fileno()).columns)  # type: ignore[union-attr]
        except (OSError, AttributeError, ValueError):
            cols = "80"
    return str(min(int(cols), 80))


def _key(argv: list[str]) -> str:
    return installation_key(_width(), " ".join(argv))


def _file(argv: list[str]) -> Path | None:
    return cache_file("help", argv, ".txt")


def serve(argv: list[str]) -> bool:
    """Print the cached help for ``argv``; False (print nothing) when it cannot."""
    if not _eligible(argv):
        return False
    path = _file(argv)
    if path is None:
        return False
    try:
        key, sources, text = path.read_text().split("\n", 2)
    except (OSError, ValueError):
        return False
    if key != _key(argv) or not sources_ok(sources):
        return False
    sys.stdout.write(text)
    sys.stdout.flush()
    return True


def render(argv: list[str], run: object) -> None:
    """Run ``run()`` (the real CLI) capturing its help on stdout, store it, print it."""
    import contextlib
    import io

    buf = io.StringIO()
    code: object = 0
    try:
        with contextlib.redirect_stdout(buf):
            run()  # type: ignore[operator]
    except SystemExit as exc:
        code = exc.code
    text = buf.getvalue()
    sys.stdout.write(text)
    sys.stdout.flush()
    path = _file(argv)
    if code in (0, None) and text and path is not None:
        try:
            store(path, f"{_key(argv)}\n{module_sources()}\n{text}")
        except OSError:
            pass
    if code not in (0, None):
        raise SystemExit(code)
