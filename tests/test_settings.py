"""debvisor_core.settings.Section: typed config values, one sentence per mistake."""

from __future__ import annotations

import pytest

from debvisor_core.context import Context
from debvisor_core.errors import BadInput
from debvisor_core.settings import Section
from debvisor_core.testing import StateDir


@pytest.fixture
def sec(dv_state: StateDir) -> Section:
    dv_state.config({"p": {"n": 3, "f": 1.5, "flag": True, "s": "x", "l": ["a"],
                           "nodes": {"n1": {"addr": 7}}, "bad": "x", "yes": "yes", "nan": float("nan")}})
    return Section.of(Context(), "p")


def test_good_values(sec: Section) -> None:
    assert sec.number("n", 1, minimum=1, integer=True) == 3
    assert sec.number("f", 1, maximum=2) == 1.5
    assert sec.number("absent", 9) == 9
    assert sec.boolean("flag", False) is True and sec.string("s") == "x" and sec.strings("l") == ["a"]
    assert sec.sub("nodes", "n1").where == "[p.nodes.n1]" and sec.table("absent") == {}


@pytest.mark.parametrize("call, message", [
    (lambda s: s.number("f", 1, integer=True, unit="seconds"),
     "[p] f must be a whole number of seconds, not 1.5"),
    (lambda s: s.number("n", 1, minimum=1, maximum=2), "[p] n must be a number from 1 to 2, not 3"),
    (lambda s: s.number("flag", 1), "[p] flag must be a number, not True"),
    (lambda s: s.number("nan", 1, minimum=0), "[p] nan must be a number ≥ 0, not nan"),
    (lambda s: s.boolean("yes", False), "[p] yes must be true or false, not 'yes'"),
    (lambda s: s.string("n"), "[p] n must be a non-empty string, not 3"),
    (lambda s: s.strings("s"), "[p] s must be a list of strings like [\"a\", \"b\"], not 'x'"),
    (lambda s: s.table("bad"), "[p] bad must be a table ([p.bad]), not 'x'"),
    (lambda s: s.sub("nodes", "n1").string("addr"), "[p.nodes.n1] addr must be a non-empty string, not 7"),
])
def test_mistakes_name_key_and_file(sec: Section, dv_state: StateDir, call, message: str) -> None:
    with pytest.raises(BadInput) as err:
        call(sec)
    assert err.value.message == f"config {dv_state.config_path}: {message}"
