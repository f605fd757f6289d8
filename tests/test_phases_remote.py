"""Operations that compose: phases with failure policies and gates, RemoteAction steps on
other nodes (the local transport: three node state dirs on this machine), and the same
journal and audit from the CLI, a JSON-event run and a recording run."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from debvisor_core.testing import Runner, StateDir


def node_notes(node: Path) -> dict[str, str]:
    d = node / "notes"
    return {p.name: p.read_text() for p in sorted(d.iterdir())} if d.exists() else {}


@pytest.fixture
def cluster(dv_state: StateDir, tmp_path: Path, site_plugins: Path) -> dict[str, Path]:
    """Three nodes, each with its own state dir, config and notes dir; the orchestrator's
    config lists them with the local transport."""
    nodes = {}
    inventory = []
    for n in ("node1", "node2", "node3"):
        root = tmp_path / n
        (root / "state").mkdir(parents=True)
        notes = root / "notes" if n != "node2" else root / "missing" / "notes"
        (root / "debvisor.toml").write_text(f'[example]\ndir = "{notes}"\n')
        nodes[n] = root
        inventory.append(f'[cluster.nodes.{n}]\ntransport = "local"\nstate_dir = "{root / "state"}"\n'
                         f'config = "{root / "debvisor.toml"}"\n')
    dv_state.config_path.write_text("\n".join(inventory))
    return nodes


ROLLING = r"""
import sys
from debvisor_core.context import Context
from debvisor_core.engine import run
from debvisor_core.errors import DebvisorError
from debvisor_core.model import Operation, Phase, ROLLBACK_PHASE_AND_PAUSE
from debvisor_core.remote import RemoteAction

phases = [Phase(n, [RemoteAction(n, "example.note.add", {"name": "upgraded", "text": "v2"})],
                node=n, on_failure=ROLLBACK_PHASE_AND_PAUSE) for n in ("node1", "node2", "node3")]
op = Operation(kind="cluster.upgrade", title="rolling upgrade of 3 nodes", phases=phases)
try:
    run(Context(yes=True), op)
except DebvisorError as exc:
    print(exc.message, file=sys.stderr)
    sys.exit(exc.exit_code)
"""


def test_rolling_three_nodes_node2_fails_rolls_back_node2_only_and_pauses(
        dv: Runner, dv_state: StateDir, cluster: dict[str, Path]) -> None:
    res = subprocess.run([sys.executable, "-c", ROLLING], capture_output=True, text=True,
                         timeout=300, env=dict(os.environ))
    assert res.returncode == 4, res.stderr
    assert "failed in phase node2" in res.stderr and "paused" in res.stderr
    assert node_notes(cluster["node1"]) == {"INDEX": "upgraded\n", "upgraded": "v2"}  # stays
    assert node_notes(cluster["node3"]) == {}  # never reached
    op = json.loads(dv("ops", "list", "--json").stdout)[0]
    assert op["kind"] == "cluster.upgrade" and op["status"] == "paused"
    shown = dv("ops", "show", op["id"], "--json").json
    assert [s["status"] for s in shown["steps"]] == ["verified", "undone", "pending"]
    # a new operation on the same lock waits for the operator's decision
    again = subprocess.run([sys.executable, "-c", ROLLING], capture_output=True, text=True,
                           timeout=300, env=dict(os.environ))
    assert again.returncode == 3 and f"ops resume {op['id']}" in again.stderr

    # the operator fixes node2, then resumes: node2 and node3 are upgraded
    (cluster["node2"] / "missing").mkdir()
    res2 = dv("--json", "ops", "resume", op["id"], "--yes")
    assert res2.code == 0, res2
    # its result reports every node: node1's step ran before the pause, the others' now
    assert sorted(res2.json["result"]["nodes"]) == ["node1", "node2", "node3"], res2.json
    for n in ("node1", "node3"):
        assert node_notes(cluster[n])["upgraded"] == "v2"
    assert (cluster["node2"] / "missing" / "notes" / "upgraded").read_text() == "v2"
    # every node journalled and audited its own operation
    for n in ("node1", "node2", "node3"):
        audit = (cluster[n] / "state" / "log" / "audit.jsonl").read_text()
        assert '"result":"succeeded"' in audit
    # and the whole operation rolls back through each node's own `ops rollback`
    res3 = dv("ops", "rollback", op["id"], "--yes")
    assert res3.code == 0, res3
    assert node_notes(cluster["node1"]) == {} and node_notes(cluster["node3"]) == {}


def test_gate_pauses_between_phases(dv: Runner, dv_state: StateDir, cluster: dict[str, Path]) -> None:
    code = ROLLING.replace("on_failure=ROLLBACK_PHASE_AND_PAUSE", "gate='pause'").replace(
        '("node1", "node2", "node3")', '("node1", "node3")')
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                         env=dict(os.environ))
    assert res.returncode == 0, res.stderr
    op = json.loads(dv("ops", "list", "--json").stdout)[0]
    assert op["status"] == "paused"
    assert "upgraded" in node_notes(cluster["node1"]) and node_notes(cluster["node3"]) == {}
    assert dv("ops", "resume", op["id"], "--yes").code == 0
    assert "upgraded" in node_notes(cluster["node3"])
    assert json.loads(dv("ops", "list", "--json").stdout)[0]["status"] == "succeeded"


def _normalised_journal(state: Path) -> list[list[tuple[str, object]]]:
    out = []
    for p in sorted((state / "ops").glob("*.jsonl")):
        evs = [json.loads(ln) for ln in p.read_text().splitlines()]
        out.append([(e["event"], e.get("step")) for e in evs])
    return out


def test_cli_events_and_recording_runs_write_the_same_journal_and_audit(
        dv: Runner, dv_state: StateDir, site_plugins: Path, tmp_path: Path) -> None:
    """The same operation through the terminal UI, the JSON event stream and a recording
    UI: identical journal event sequences and audit results."""
    states = {}
    for mode in ("cli", "events", "recording"):
        state = tmp_path / mode
        state.mkdir()
        env = {"DEBVISOR_STATE_DIR": str(state)}
        if mode == "cli":
            assert dv("example", "note", "add", "n", "t", "--yes", env=env).code == 0
        elif mode == "events":
            res = dv("--events", "example", "note", "add", "n", "t", "--yes", env=env)
            assert res.code == 0, res
            events = [json.loads(ln) for ln in res.stdout.splitlines()]
            assert [e["event"] for e in events if e["event"] != "log"][0] == "plan"
            assert events[-1]["event"] == "result" and events[-1]["result"]["status"] == "succeeded"
            assert {"step", "log"} <= {e["event"] for e in events}
        else:
            code = ("from debvisor_core.context import Context\n"
                    "from debvisor_core.ui import RecordingUI\n"
                    "from debvisor_core import actions\n"
                    "ctx = Context(yes=True); ctx.ui = RecordingUI()\n"
                    "with ctx.ui.bound():\n"
                    "    actions.run_json(ctx, 'example.note.add', {'name': 'n', 'text': 't'})\n"
                    "assert [e['status'] for e in ctx.ui.of('step')] == ['running', 'done'] * 2\n")
            r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                               timeout=120, env={**os.environ, **env})
            assert r.returncode == 0, r.stderr
            assert r.stderr == ""
        states[mode] = state
    journals = {m: _normalised_journal(s) for m, s in states.items()}
    assert journals["cli"] == journals["events"] == journals["recording"]
    audits = {m: [(json.loads(ln)["result"], json.loads(ln)["details"].get("kind"))
                  for ln in (s / "log" / "audit.jsonl").read_text().splitlines()]
              for m, s in states.items()}
    assert audits["cli"] == audits["events"] == audits["recording"] == [
        ("started", "example.note-add"), ("succeeded", "example.note-add")]


def test_actions_list_show_and_run(dv: Runner, dv_state: StateDir, site_plugins: Path) -> None:
    listed = dv("actions", "list", "--json")
    assert listed.code == 0, listed
    paths = {a["path"]: a for a in listed.json}
    assert paths["example.note.add"]["changes_state"] is True
    assert paths["example.note.show"]["changes_state"] is False
    assert paths["example.note.show"]["privilege"] == "none"
    shown = dv("actions", "show", "example.note.add", "--json").json
    assert shown["params"]["required"] == ["name", "text"]
    assert shown["params"]["properties"]["name"]["type"] == "string"
    assert shown["kind"] == "example.note-add" and shown["examples"]
    res = dv("actions", "run", "example.note.add", "-", "--yes", input='{"name": "j", "text": "k"}')
    assert res.code == 0 and res.json["status"] == "succeeded", res
    assert dv("actions", "run", "example.note.show").json == {"j": "k"}
    bad = dv("actions", "run", "example.note.add", "-", "--yes", input='{"name": "j", "txt": "k"}')
    assert bad.code == 2 and "unknown parameter 'txt'" in bad.stderr
    bad = dv("actions", "run", "example.note.add", "-", "--yes", input="[1")
    assert bad.code == 2 and "not a JSON object" in bad.stderr
    assert dv("actions", "show", "nope.nothing").code == 2


REMOTE_KILLED = r"""
import os, signal
from debvisor_core.context import Context
from debvisor_core.engine import run
from debvisor_core.model import Operation
from debvisor_core.remote import RemoteAction

class Killed(RemoteAction):
    TYPE = "core.remote-action"  # journalled as the real step, which rollback rebuilds

    def apply(self, ctx, prior):
        super().apply(ctx, prior)           # the remote operation ran ...
        os.kill(os.getpid(), signal.SIGKILL)  # ... but we die before its id is journalled

run(Context(yes=True), Operation(kind="cluster.upgrade", title="killed mid-step",
    steps=[Killed("node1", "example.note.add", {"name": "k", "text": "v"})]))
"""


def test_interrupted_remote_step_is_found_by_its_origin(
        dv: Runner, dv_state: StateDir, cluster: dict[str, Path]) -> None:
    """Review 2, #2: the orchestrator dies after the remote operation ran but before its id
    was journalled here: `ops rollback` finds that operation by its origin (OPID.STEP),
    never by guessing, and rolls it back there."""
    res = subprocess.run([sys.executable, "-c", REMOTE_KILLED], capture_output=True, text=True,
                         timeout=300, env=dict(os.environ))
    assert res.returncode == -9, res.stderr
    op = json.loads(dv("ops", "list", "--json").stdout)[0]
    assert op["status"] == "interrupted"
    node1 = {**os.environ, "DEBVISOR_STATE_DIR": str(cluster["node1"] / "state"),
             "DEBVISOR_CONFIG": str(cluster["node1"] / "debvisor.toml")}
    there = dv("ops", "list", "--json", "--origin", f"{op['id']}.0", env=node1)
    assert [o["status"] for o in there.json] == ["succeeded"], there
    # an unrelated operation of the same kind on node1, later: must not be the one undone
    other = dv("example", "note", "add", "other", "x", "--yes", env=node1)
    assert other.code == 0
    assert node_notes(cluster["node1"]) == {"INDEX": "k\nother\n", "k": "v", "other": "x"}
    back = dv("ops", "rollback", op["id"], "--yes")
    assert back.code == 0, back
    assert node_notes(cluster["node1"]) == {"INDEX": "other\n", "other": "x"}
