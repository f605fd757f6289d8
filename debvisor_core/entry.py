"""The `debvisor` console script: help from the cache when it can (helpcache.py), a query
action by the fast path when it can (quickquery.py), else the click CLI."""

from __future__ import annotations

import sys


def main() -> None:
    """Console-script entry point of `debvisor`."""
    from . import helpcache

    argv = sys.argv[1:]
    if helpcache.serve(argv):
        return
    from . import quickquery

    code = quickquery.serve(argv)
    if code is not None:
        sys.exit(code)
    from .cli import main as cli_main

    if helpcache._eligible(argv):
        helpcache.render(argv, cli_main)
    else:
        cli_main()


def alias(word: str, prog: str) -> None:
    """Entry point of an alias such as `hvctl` (`debvisor hv …`): a query by the fast path
    when it can, else the click CLI under the alias's name."""
    from . import quickquery

    code = quickquery.serve(sys.argv[1:], word=word)
    if code is not None:
        sys.exit(code)
    from .cli import alias_main

    alias_main(word, prog)
