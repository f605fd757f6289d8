"""The man pages (docs/man, and each plugin's copy under plugins/*/man) are what the
declarations produce, every declared action has help and examples, and groff, lexgrog
and man read the pages without a warning."""

from __future__ import annotations

import importlib.metadata
import os
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import click
import pytest

from debvisor_core import manpages
from debvisor_core.actions import Action, Param, attach

ROOT = Path(__file__).resolve().parent.parent
EXPECTED = {"debvisor.1", "debvisor-hv.1", "debvisor-dns.1", "debvisor-ceph.1", "hvctl.1", "cephctl.1"}
PAGES = sorted((ROOT / "docs" / "man").glob("*.1"))
REGENERATE = "run `nox -s docs` to regenerate them, then commit docs/man and plugins/*/man"


def _all_installed() -> bool:
    try:
        for dist in manpages.distributions(ROOT):
            importlib.metadata.distribution(dist.name)
    except importlib.metadata.PackageNotFoundError:
        return False
    return True


needs_plugins = pytest.mark.skipif(not _all_installed(),
                                   reason="needs the core and every first-party plugin installed")


def _tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.skip(f"{name} is not installed (apt-get install man-db groff-base)")
    return path


@needs_plugins
def test_committed_pages_are_what_the_declarations_produce(tmp_path: Path) -> None:
    # A subprocess: generation imports every first-party plugin, with only those visible.
    proc = subprocess.run([sys.executable, "-m", "debvisor_core.manpages", "--root", str(ROOT),
                           "--out", str(tmp_path)], capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stderr
    generated = {p.relative_to(tmp_path): p.read_bytes() for p in tmp_path.rglob("*.1")}
    assert {p.name for p in generated} >= EXPECTED
    committed = {p.relative_to(ROOT): p.read_bytes()
                 for p in [*ROOT.glob("docs/man/*.1"), *ROOT.glob("plugins/*/man/*.1")]}
    problems = [f"{p}: missing" for p in sorted(set(generated) - set(committed))]
    problems += [f"{p}: not generated any more" for p in sorted(set(committed) - set(generated))]
    problems += [f"{p}: differs from what the declarations produce"
                 for p in sorted(set(generated) & set(committed)) if generated[p] != committed[p]]
    assert not problems, f"man pages out of date ({'; '.join(problems)}): {REGENERATE}"


def test_each_distribution_installs_its_pages() -> None:
    dists = manpages.distributions(ROOT)
    aliases = {script: word for d in dists for script, word in d.aliases}
    assert aliases.get("hvctl") == "hv" and aliases.get("cephctl") == "ceph", aliases
    for dist in dists:
        pyproject = dist.directory / "pyproject.toml"
        data = tomllib.loads((ROOT / pyproject).read_text())
        listed = data.get("tool", {}).get("setuptools", {}).get("data-files", {}).get(
            "share/man/man1")
        assert listed, f"{pyproject}: install the man pages with [tool.setuptools.data-files]"
        if dist.is_core:
            assert listed == ["docs/man/debvisor.1"]
        else:
            pages = [f"debvisor-{w}.1" for w in dist.words] + [f"{a}.1" for a, _ in dist.aliases]
            assert sorted(listed) == sorted(f"man/{p}" for p in pages), dist.name
        for rel in listed:
            assert (ROOT / dist.directory / rel).is_file(), f"{dist.name}: {rel}: {REGENERATE}"


@pytest.mark.parametrize("page", PAGES, ids=[p.name for p in PAGES])
def test_groff_reads_the_page_without_warnings(page: Path) -> None:
    proc = subprocess.run([_tool("groff"), "-ww", "-man", "-Tutf8", "-z", str(page)],
                          capture_output=True, text=True, check=False)
    assert proc.returncode == 0 and proc.stderr == "", proc.stderr


@pytest.mark.parametrize("page", PAGES, ids=[p.name for p in PAGES])
def test_lexgrog_finds_the_name_section(page: Path) -> None:
    proc = subprocess.run([_tool("lexgrog"), str(page)], capture_output=True, text=True,
                          check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    name = page.name.removesuffix(".1")
    assert proc.stdout.startswith(f'{page}: "{name} - '), proc.stdout


@pytest.mark.parametrize("page", PAGES, ids=[p.name for p in PAGES])
def test_man_renders_the_page(page: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("MAN_KEEP_FORMATTING", "MANOPT")}
    env.update(MANWIDTH="80", COLUMNS="80", LC_ALL="C.UTF-8", MANPAGER="cat", PAGER="cat")
    proc = subprocess.run([_tool("man"), "--warnings", "-l", str(page)], capture_output=True,
                          text=True, env=env, check=False)
    assert proc.returncode == 0 and proc.stderr == "", proc.stderr
    out = proc.stdout
    for section in ("NAME", "SYNOPSIS", "DESCRIPTION", "COMMANDS", "EXIT STATUS", "SEE ALSO"):
        assert f"\n{section}\n" in out, f"{page.name}: no {section} section"
    assert "\\f" not in out and "\\-" not in out and "\\e" not in out, "an escape leaked"
    assert "\u2010" not in out, "a hyphen a reader cannot copy and paste (use \\-)"
    if page.name == "debvisor.1":
        for text in ("ENVIRONMENT", "FILES", "DEBVISOR_CONFIG", "DEBVISOR_STATE_DIR",
                     "DEBVISOR_PLUGINS", "DEBVISOR_DISABLE_PLUGINS", "/etc/debvisor/debvisor.toml"):
            assert text in out, f"debvisor.1 does not mention {text}"


# -- declarations without help or examples ------------------------------------------
def _query(ctx: Any, params: dict[str, Any]) -> Any:
    return None


GOOD = Action(path="t.good", summary="Show a thing", query=_query,
              params=(Param("name", "The thing to show.", positional=True),),
              examples=("debvisor t good vm1",))


def _tree(actions: list[Action]) -> tuple[click.Group, click.Context]:
    group = attach(click.Group("t", help="Test commands."), actions)
    root = click.Context(click.Group("debvisor"), info_name="debvisor")
    return group, click.Context(group, parent=root, info_name="t")


def test_a_declared_action_without_help_or_example_fails() -> None:
    no_help = Action(path="t.no-help", summary=" ", query=_query, examples=("debvisor t x",))
    no_example = Action(path="t.no-example", summary="Do a thing", query=_query)
    assert manpages.check_action(GOOD) == []
    assert manpages.check_action(no_help) == ["action t.no-help: no help (its summary is empty)"]
    assert manpages.check_action(no_example) == [
        "action t.no-example: no example (give it examples=(...))"]
    with pytest.raises(manpages.ManPageError, match="t.no-help: no help.*t.no-example: no example"):
        manpages.validate_actions([GOOD, no_help, no_example])
    manpages.validate_actions([GOOD])


def test_a_command_without_example_fails_generation() -> None:
    no_example = Action(path="t.bare", summary="Do a thing", query=_query)
    group, ctx = _tree([GOOD, no_example])
    with pytest.raises(manpages.ManPageError, match=r"debvisor t bare: no example"):
        manpages.command_doc(group, ctx)

    hand_written = click.Command("plain", help="Help, but no Examples block.")
    group.add_command(hand_written)
    problems: list[str] = []
    manpages.command_doc(group, ctx, problems=problems)
    assert [p.split(":")[0] for p in problems] == ["debvisor t bare", "debvisor t plain"]


def test_a_documented_action_gives_its_help_arguments_options_and_examples() -> None:
    group, ctx = _tree([GOOD])
    doc = manpages.command_doc(group, ctx, {GOOD.path: GOOD})
    [cmd] = doc.children
    assert cmd.path == "debvisor t good"
    assert cmd.summary == "Show a thing"
    assert cmd.examples == ["debvisor t good vm1"]
    assert cmd.arguments == [("NAME", "The thing to show.")]
    assert [names for names, _ in cmd.options] == ["--json"]


def test_help_text_is_escaped_for_groff() -> None:
    assert manpages.escape("a\\b --dry-run \u2014 x") == "a\\eb \\-\\-dry\\-run \\[u2014] x"
    lines = manpages._text([".hidden request", "'quoted", "run `hvctl list` now"])
    assert lines == ["\\&.hidden request", "\\&'quoted", "run \\fBhvctl list\\fR now"]
    paras, examples = manpages.parse_help(
        "Summary.\n\n    Body line.\n\n    \b\n    Example:\n      a --b\n      c \\\n          d\n")
    assert [p.lines for p in paras] == [["Summary."], ["Body line."]]
    assert examples == ["a --b", "c \\", "    d"]
