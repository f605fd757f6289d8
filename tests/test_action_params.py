"""Generated CLI options take what the parameter's type documents."""

from __future__ import annotations

import click
import pytest

from debvisor_core.actions import Action, Param, command


@pytest.mark.parametrize(("ptype", "default", "given", "value"), [
    ("duration", 600.0, "3s", 3.0),
    ("duration", 600, "10m", 600.0),
    ("size", 1024, "1.5GiB", int(1.5 * 2**30)),
])
def test_duration_and_size_options_take_units_whatever_the_default(
        ptype: str, default: object, given: str, value: object) -> None:
    # click infers FLOAT/INT from a numeric default; a duration or size option must still
    # accept "3s" or "1.5GiB" (this was refused as "not a valid float").
    action = Action(path="demo.show", summary="Show.", query=lambda ctx, p: p,
                    params=(Param("limit", "How much.", type=ptype, default=default),))
    opt = next(p for p in command(action).params if p.name == "limit")
    raw = opt.type.convert(given, opt, click.Context(click.Command("x")))
    assert action.validate({"limit": raw})["limit"] == value
