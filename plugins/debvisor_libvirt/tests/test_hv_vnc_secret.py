"""`hv vnc target` keeps the old VNC password out of the journal and the audit log.

No lab: a libvirt test-driver node (``test:///PATH/node.xml``) with a password-protected
VM. The test driver keeps its state per connection, so target and rollback run in this
process (one cached connection); `ops show` runs as a separate command.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

OLD = "OLDs3cr3t"
NEW = "NEWpw1"

NODE_XML = f"""<node>
  <domain type='test'>
    <name>vmpw</name>
    <memory>131072</memory>
    <vcpu>1</vcpu>
    <os><type>hvm</type></os>
    <devices>
      <graphics type='vnc' port='5901' autoport='no' listen='127.0.0.1' passwd='{OLD}'/>
    </devices>
  </domain>
</node>
"""


def _run(*args: str) -> Any:
    """`debvisor ARGS` in this process; the exit code (0 when the command returns)."""
    from debvisor_core.cli import main_group

    rv = main_group.main(list(args), prog_name="debvisor", standalone_mode=False)
    return 0 if rv is None else rv


def _passwd(uri: str) -> str | None:
    import xml.etree.ElementTree as ET

    from debvisor_libvirt.nodes import Node, connect, lv

    libvirt = lv()
    dom = connect(Node("n1", uri)).lookupByName("vmpw")  # the cached connection: same state
    xml = dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE | libvirt.VIR_DOMAIN_XML_SECURE)
    g = ET.fromstring(xml).find("devices/graphics[@type='vnc']")
    assert g is not None
    return g.get("passwd")


def test_vnc_target_journals_no_password_and_rollback_restores_it(
        dv: Any, dv_state: Any, tmp_path: Path) -> None:
    node_xml = tmp_path / "node.xml"
    node_xml.write_text(NODE_XML)
    uri = f"test://{node_xml}"
    dv_state.config({"hv": {"nodes": {"n1": {"uri": uri}}}})
    pwfile = tmp_path / "vnc.pw"
    pwfile.write_text(NEW + "\n")
    pwfile.chmod(0o600)
    assert _passwd(uri) == OLD

    assert _run("--json", "--yes", "hv", "vnc", "target", "vmpw", "--listen", "127.0.0.1",
                "--port", "5905", "--password-file", str(pwfile)) == 0
    assert _passwd(uri) == NEW

    ops = dv("--json", "ops", "list")
    assert ops.code == 0, ops
    op_id = next(o["id"] for o in ops.json if o["kind"] == "hv.vnc-target")
    shown = dv("--json", "ops", "show", op_id)
    assert shown.code == 0, shown
    assert "graphics" in shown.stdout  # the record is there ...
    assert OLD not in shown.stdout and NEW not in shown.stdout  # ... without a password
    stash_dir = dv_state.path / "plugins" / "hv" / "vnc-prior-passwd"
    for f in dv_state.path.rglob("*"):  # journal, audit log, locks: no password anywhere
        if f.is_file() and stash_dir not in f.parents:
            assert OLD.encode() not in f.read_bytes(), f
    stashed = list(stash_dir.iterdir())
    assert [p.read_text() for p in stashed] == [OLD]
    assert stashed[0].stat().st_mode & 0o777 == 0o600

    assert _run("--yes", "hv", "vnc", "target", "--rollback") == 0
    assert _passwd(uri) == OLD
    assert list(stash_dir.iterdir()) == []  # undone: the copy is deleted
