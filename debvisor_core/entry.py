"""The `debvisor` console script: help from the cache when it can (helpcache.py), else the
click CLI."""

from __future__ import annotations

import sys


def main() -> None:
    """Console-script entry point of `debvisor`."""
    from . import helpcache

    argv = sys.argv[1:]
    if helpcache.serve(argv):
        return
    from .cli import main as cli_main

    if helpcache._eligible(argv):
        helpcache.render(argv, cli_main)
    else:
        cli_main()
