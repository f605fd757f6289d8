"""Where log lines go while a run UI is bound (one context variable holds both)."""

from __future__ import annotations

import threading

import pytest

from debvisor_core import log, ui


def test_an_events_ui_takes_its_lines_and_a_terminal_leaves_them_where_they_went(
        capsys: pytest.CaptureFixture[str]) -> None:
    rec: list[tuple[str, str]] = []
    events = ui.RecordingUI()
    assert ui.active() is None
    with events.bound():
        assert ui.active() is events
        log.warn("to the events")
        with log.bound(lambda lvl, msg: rec.append((lvl, msg))):
            log.info("to the sink")  # an inner sink wins
            assert ui.active() is events  # the UI stays bound
        with ui.TerminalUI(quiet=True).bound():
            log.error("still to the events")  # a terminal does not take lines
        log.info("back")
    assert ui.active() is None
    log.info("to stderr")
    assert rec == [("INFO", "to the sink")]
    assert [(e["level"], e["message"]) for e in events.of("log")] == [
        ("warn", "to the events"), ("error", "still to the events"), ("info", "back")]
    assert capsys.readouterr().err == "[INFO] to stderr\n"
    outer: list[str] = []
    with log.bound(lambda lvl, msg: outer.append(msg)):
        with ui.TerminalUI(quiet=True).bound():
            log.info("outer sink")
        inner = ui.RecordingUI()
        with inner.bound():
            log.info("inner ui")  # a UI bound inside a sink takes its own lines
    assert outer == ["outer sink"] and inner.of("log")[0]["message"] == "inner ui"


def test_two_threads_bound_to_two_uis_never_see_each_others_lines() -> None:
    uis = [ui.RecordingUI(), ui.RecordingUI()]
    barrier = threading.Barrier(2)

    def run(i: int) -> None:
        with uis[i].bound():
            barrier.wait()
            for n in range(50):
                log.info(f"{i}:{n}")
            barrier.wait()

    threads = [threading.Thread(target=run, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for i, u in enumerate(uis):
        assert [e["message"] for e in u.of("log")] == [f"{i}:{n}" for n in range(50)]
