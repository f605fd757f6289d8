"""debvisor_core.statefile: small JSON state files, read with a default, replaced atomically."""

from __future__ import annotations

from pathlib import Path

from debvisor_core.statefile import read_json, update_json, write_json


def test_read_default_when_missing_or_corrupt(tmp_path: Path) -> None:
    p = tmp_path / "s.json"
    assert read_json(p, {"x": 1}) == {"x": 1}
    p.write_text("{not json")
    assert read_json(p, []) == []


def test_update_merges_and_leaves_no_temporary_file(tmp_path: Path) -> None:
    p = tmp_path / "sub" / "s.json"
    write_json(p, {"a": 1})
    out = update_json(p, lambda d: d.__setitem__("b", 2))
    assert out == {"a": 1, "b": 2} and read_json(p) == {"a": 1, "b": 2}
    p.write_text("[1, 2]")  # not an object: replaced by one
    assert update_json(p, lambda d: d.__setitem__("c", 3)) == {"c": 3}
    assert sorted(x.name for x in p.parent.iterdir()) == [".s.json.lock", "s.json"]


def test_concurrent_updates_keep_every_key(tmp_path: Path) -> None:
    """Eight processes adding one key each at once: no update is lost (they lock)."""
    import subprocess
    import sys

    p = tmp_path / "s.json"
    code = ("import sys; from pathlib import Path; from debvisor_core.statefile import update_json\n"
            "for i in range(20):\n"
            "    update_json(Path(sys.argv[1]), lambda d: d.__setitem__(f'{sys.argv[2]}-{i}', i))\n")
    procs = [subprocess.Popen([sys.executable, "-c", code, str(p), str(n)]) for n in range(8)]
    assert [q.wait(timeout=60) for q in procs] == [0] * 8
    assert len(read_json(p)) == 8 * 20
