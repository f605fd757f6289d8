"""VNC consoles: probing (RFB banner and security types), targets, port ranges, firewall.

``[hv.vnc]`` config: ``port_range = [5900, 5999]`` (auto ports come from here),
``firewall = true`` (open each assigned port with nftables on the node, table
``inet debvisor`` chain ``vnc``), ``require_auth = true`` (a VNC server offering
security type None is drift). TLS and SASL are libvirt's qemu.conf settings
(``vnc_tls``, ``vnc_tls_x509_cert_dir``, ``vnc_tls_x509_verify``, ``vnc_sasl``); the probe
reports what each server offers (VeNCrypt = TLS, SASL, VNC password, None).

nft only ever gets JSON we build (``nft -j -f -`` on stdin), never a command line: a
domain name or metadata value can not become an nft command. ``vnc ensure`` also skips,
with a warning, every domain whose name is not a valid VM name and every VNC target in
metadata that is not ``{listen: IP address, port: 5900-65535}``.
"""

from __future__ import annotations

import ipaddress
import json
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from typing import Any

from debvisor_core.context import Context
from debvisor_core.engine import Step
from debvisor_core.errors import BadInput, StepFailed

from .domains import devices, read_meta, write_meta
from .nodes import VM_NAME_RE, Node, check_vm_name, lv, node, node_command, tcp_connect
from .snapshots import domain

SECURITY_TYPES = {1: "none", 2: "vnc-password", 16: "tight", 18: "tls", 19: "vencrypt",
                  20: "sasl"}
NFT_TABLE = ("inet", "debvisor")
NFT_CHAIN = "vnc"


def settings(ctx: Context) -> dict[str, Any]:
    from .hvconfig import config_error, table

    cfg = dict(table(ctx, "vnc"))
    pr = cfg.get("port_range", [5900, 5999])
    ok = (isinstance(pr, list) and len(pr) == 2
          and all(isinstance(p, int) and not isinstance(p, bool) for p in pr)
          and 5900 <= pr[0] <= pr[1] <= 65535)
    if not ok:
        raise config_error(ctx, "[hv.vnc] port_range",
                           f"must be [LOW, HIGH] within 5900-65535, not {pr!r}")
    for key in ("firewall", "require_auth"):
        if not isinstance(cfg.get(key, False), bool):
            raise config_error(ctx, f"[hv.vnc] {key}", f"must be true or false, not {cfg[key]!r}")
    cfg["port_range"] = (pr[0], pr[1])
    return cfg


def probe(n: Node, host: str, port: int, timeout: float = 3.0) -> dict[str, Any]:
    """Connect, read the RFB banner, answer 3.8 and read the offered security types."""
    if host in ("0.0.0.0", "::"):
        host = "127.0.0.1"
    try:
        with tcp_connect(n, host, port, timeout=timeout) as s:
            s.settimeout(timeout)
            banner = _recv(s, 12)
            if not banner.startswith(b"RFB "):
                return {"ok": False, "error": f"not a VNC server (banner {banner[:12]!r})"}
            s.sendall(b"RFB 003.008\n")
            count = _recv(s, 1)[0]
            types = list(_recv(s, count)) if count else []
            return {"ok": True, "banner": banner.decode().strip(),
                    "security": [SECURITY_TYPES.get(t, str(t)) for t in types]}
    except (OSError, TimeoutError) as exc:
        return {"ok": False, "error": f"cannot connect to {host}:{port}: {exc}"}


def _recv(s: Any, n: int) -> bytes:
    data = b""
    while len(data) < n:
        chunk = s.recv(n - len(data))
        if not chunk:
            break
        data += chunk
    return data


def used_ports(conn: Any, exclude: str | None = None) -> set[int]:
    """VNC/SPICE ports of every domain on a node (live and persistent config)."""
    libvirt = lv()
    ports: set[int] = set()
    for dom in conn.listAllDomains(0):
        if dom.name() == exclude:
            continue
        for flags in (0, libvirt.VIR_DOMAIN_XML_INACTIVE):
            try:
                for g in devices(dom.XMLDesc(flags)).graphics:
                    if g["port"] > 0:
                        ports.add(g["port"])
            except libvirt.libvirtError:
                continue
    return ports


def pick_port(conn: Any, vm: str, lo: int, hi: int) -> int:
    used = used_ports(conn, exclude=vm)
    for p in range(lo, hi + 1):
        if p not in used:
            return p
    raise BadInput(f"no free VNC port in {lo}-{hi} on this node ({len(used)} in use)")


def check_listen(addr: str) -> str:
    try:
        ipaddress.ip_address(addr)
    except ValueError:
        raise BadInput(f"bad listen address {addr!r}: give an IP address, e.g. 0.0.0.0") from None
    return addr


def _graphics_xml(xml: str) -> str | None:
    g = ET.fromstring(xml).find("devices/graphics[@type='vnc']")
    return None if g is None else ET.tostring(g, encoding="unicode")


@dataclass
class SetVncTarget(Step):
    """Set VM's VNC listen address, port (and password) in its persistent definition."""

    TYPE = "hv.vnc.target"

    node: str
    vm: str
    listen: str
    port: int
    password_file: str | None = None

    def describe(self, ctx: Context) -> str:
        pw = ", password from " + self.password_file if self.password_file else ""
        return f"set VNC of {self.vm} to {self.listen}:{self.port}{pw} (applies at next start)"

    def check(self, ctx: Context) -> None:
        dom = domain(ctx, self.node, self.vm)
        if not dom.isPersistent():
            raise StepFailed(f"{self.vm} is transient; only persistent VMs get a VNC target")
        if self.port in used_ports(dom.connect(), exclude=self.vm):
            raise StepFailed(f"port {self.port} is already used by another VM on {self.node}")

    def snapshot(self, ctx: Context) -> dict[str, Any]:
        """The prior VNC graphics without its password: that goes to an owner-only file
        under the plugin's state dir, named in the record (the journal holds no secret)."""
        libvirt = lv()
        dom = domain(ctx, self.node, self.vm)
        xml = dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE | libvirt.VIR_DOMAIN_XML_SECURE)
        meta = read_meta(dom, inactive=True)
        graphics, passwd = _split_passwd(_graphics_xml(xml))
        record: dict[str, Any] = {"graphics": graphics, "meta": meta,
                                  "vnc": None if meta is None else meta.get("vnc")}
        prune_stash(ctx, self.vm)
        if passwd is not None:
            record["passwd_file"] = _stash_passwd(ctx, self.vm, passwd)
        return record

    def apply(self, ctx: Context, prior: dict[str, Any]) -> dict[str, Any]:
        from debvisor_core.secrets import read_secret

        check_vm_name(self.vm)
        check_port(self.port)
        check_listen(self.listen)
        dom = domain(ctx, self.node, self.vm)
        if self.port in used_ports(dom.connect(), exclude=self.vm):  # again, under the lock
            raise StepFailed(f"port {self.port} is already used by another VM on {self.node}")
        root, devs = _persistent_devices(dom)
        g = devs.find("graphics[@type='vnc']")
        if g is None:
            g = ET.SubElement(devs, "graphics", type="vnc")
        for child in list(g.findall("listen")):
            g.remove(child)
        g.set("port", str(self.port))
        g.set("autoport", "no")
        g.set("listen", self.listen)
        ET.SubElement(g, "listen", type="address", address=self.listen)
        if self.password_file:
            pw = read_secret(self.password_file, "VNC password file").decode().strip()
            g.set("passwd", pw)
        dom.connect().defineXML(ET.tostring(root, encoding="unicode"))
        _patch_vnc_meta(domain(ctx, self.node, self.vm), {"listen": self.listen, "port": self.port})
        return {}

    def verify(self, ctx: Context, record: dict[str, Any]) -> None:
        dom = domain(ctx, self.node, self.vm)
        gs = devices(dom.XMLDesc(lv().VIR_DOMAIN_XML_INACTIVE)).graphics
        if not any(g["port"] == self.port and g["listen"] == self.listen for g in gs):
            raise StepFailed(f"the VNC target of {self.vm} did not take")

    def undo(self, ctx: Context, record: dict[str, Any]) -> None:
        dom = domain(ctx, self.node, self.vm)
        root, devs = _persistent_devices(dom)
        for g in devs.findall("graphics[@type='vnc']"):
            devs.remove(g)
        if record.get("graphics"):
            g = ET.fromstring(record["graphics"])
            if record.get("passwd_file"):
                g.set("passwd", _unstash_passwd(ctx, record["passwd_file"]))
            devs.append(g)
        dom.connect().defineXML(ET.tostring(root, encoding="unicode"))
        prior_vnc = record["vnc"] if "vnc" in record else (record.get("meta") or {}).get("vnc")
        _patch_vnc_meta(domain(ctx, self.node, self.vm), prior_vnc)
        if record.get("passwd_file"):  # restored: the copy is no longer needed
            _passwd_path(ctx, record["passwd_file"]).unlink(missing_ok=True)


def _patch_vnc_meta(dom: Any, vnc: dict[str, Any] | None) -> None:
    """Set (or with None drop) only the ``vnc`` key of the VM's DebVisor metadata, read
    now: the inventory keys, written by `register`, are left as they are."""
    meta = read_meta(dom, inactive=dom.isPersistent())
    if meta is None:
        if vnc is None:
            return
        meta = {"registered": False}
    meta["vnc"] = vnc
    empty = not meta.get("registered") and not any(
        meta.get(k) for k in ("owner", "role", "tags", "addresses", "registered_at", "vnc"))
    write_meta(dom, None if empty else meta)


def check_port(port: Any) -> int:
    """A VNC port: an int in 5900-65535 (BadInput otherwise)."""
    if isinstance(port, bool) or not isinstance(port, int) or not 5900 <= port <= 65535:
        raise BadInput(f"bad VNC port {port!r}: give a number in 5900-65535")
    return port


def valid_target(want: Any) -> dict[str, Any] | None:
    """``want`` as ``{listen, port}`` if it is a valid VNC target, else None."""
    if not isinstance(want, dict) or set(want) != {"listen", "port"}:
        return None
    try:
        check_listen(want["listen"] if isinstance(want["listen"], str) else "")
        check_port(want["port"])
    except BadInput:
        return None
    return {"listen": want["listen"], "port": want["port"]}


_PASSWD_DIR = "vnc-prior-passwd"


def _split_passwd(graphics: str | None) -> tuple[str | None, str | None]:
    """(graphics XML with ``passwd`` removed, the password or None)."""
    if graphics is None:
        return None, None
    g = ET.fromstring(graphics)
    passwd = g.attrib.pop("passwd", None)
    return ET.tostring(g, encoding="unicode"), passwd


def _passwd_path(ctx: Context, name: str) -> Any:
    if "/" in name or name.startswith("."):
        raise StepFailed(f"bad password file name {name!r} in the operation record")
    return ctx.plugin_state("hv") / _PASSWD_DIR / name


def _stash_passwd(ctx: Context, vm: str, passwd: str) -> str:
    """Keep ``passwd`` in a new owner-only file; return its name (for the record)."""
    import secrets

    from debvisor_core.secrets import write_secret

    name = f"{vm}-{secrets.token_hex(8)}"
    path = _passwd_path(ctx, name)
    path.parent.mkdir(mode=0o700, exist_ok=True)
    write_secret(path, passwd.encode())
    return name


def prune_stash(ctx: Context, vm: str) -> list[str]:
    """Delete the stashed passwords of ``vm`` nothing can use any more (the caller holds
    ``hv.vm.VM``): orphans that no journal names (a run killed before it journalled its
    record) and the copies of succeeded operations older than the newest one (only the
    newest can be undone by ``--rollback``); returns the names deleted."""
    import re

    from debvisor_core import journal

    stash = ctx.plugin_state("hv") / _PASSWD_DIR
    if not stash.is_dir():
        return []
    mine = [p for p in stash.iterdir() if p.is_file()
            and re.fullmatch(r"[0-9a-f]{16}", p.name.rpartition("-")[2])
            and p.name.rpartition("-")[0] == vm]
    if not mine:
        return []
    referenced: dict[str, tuple[float, str, str]] = {}  # stash name -> (started, op id, status)
    ops_dir = ctx.state_dir / "ops"
    for f in sorted(ops_dir.glob("*.jsonl")) if ops_dir.is_dir() else []:
        try:
            text = f.read_text(errors="replace")
        except OSError:
            continue
        names = [p.name for p in mine if p.name in text]
        if not names:
            continue
        try:
            st = journal.load(f)
            started, status = float(st.started), str(st.status)
        except Exception:  # noqa: BLE001 - an unreadable journal: keep what it names
            started, status = 0.0, "unknown"
        for n in names:
            referenced[n] = (started, f.stem, status)
    succeeded = sorted((t, op) for t, op, st in referenced.values() if st == "succeeded")
    newest = succeeded[-1][1] if succeeded else None  # by start time: ids of one second tie
    gone: list[str] = []
    for p in mine:
        ref = referenced.get(p.name)
        if ref is None or (ref[2] in ("succeeded", "rolled-back") and ref[1] != newest):
            p.unlink(missing_ok=True)
            gone.append(p.name)
    return gone


def prune_stash_locked(ctx: Context, vms: list[str]) -> None:
    """:func:`prune_stash` for each VM after its operation succeeded, under ``hv.vm.VM``
    (so a run between its stash and its journalled intent is never taken for an orphan)."""
    from debvisor_core import log
    from debvisor_core.errors import DebvisorError
    from debvisor_core.locks import node_lock

    for vm in sorted(set(vms)):
        try:
            with node_lock(ctx.state_dir, [f"hv.vm.{vm}"], wait=5):
                prune_stash(ctx, vm)
        except (DebvisorError, OSError) as exc:  # the next `vnc target` of it prunes then
            log.debug(f"pruning the saved VNC passwords of {vm}: {exc}")


def _unstash_passwd(ctx: Context, name: str) -> str:
    from debvisor_core.secrets import read_secret

    path = _passwd_path(ctx, name)
    if not path.exists():
        raise StepFailed(f"the saved VNC password {path} is gone; cannot restore it")
    return read_secret(path, "saved VNC password").decode()


def _nft_json(n: Node, commands: list[dict[str, Any]], *, echo: bool = False) -> Any:
    """Run nft ``commands`` (its JSON schema) on node ``n`` through ``nft -j -f -``: the
    JSON is data on stdin, never parsed as an nft command line."""
    argv = ["nft", "-j", *(["-e", "-a"] if echo else []), "-f", "-"]
    return node_command(n, argv, input=json.dumps({"nftables": commands}))


def _chain_ref() -> dict[str, Any]:
    return {"family": NFT_TABLE[0], "table": NFT_TABLE[1], "chain": NFT_CHAIN}


def _comment(vm: str) -> str:
    return f"hv-vnc-{check_vm_name(vm)}"


def _rule_expr(port: int) -> list[dict[str, Any]]:
    return [{"match": {"op": "==", "left": {"payload": {"protocol": "tcp", "field": "dport"}},
                       "right": check_port(port)}},
            {"accept": None}]


def _is_vnc_rule(rule: dict[str, Any], vm: str, port: int) -> bool:
    return rule.get("comment") == _comment(vm) and rule.get("expr") == _rule_expr(port)


def _rules(n: Node) -> list[dict[str, Any]] | None:
    """The rules of our chain (None when the chain does not exist); StepFailed when nft
    fails otherwise."""
    res = node_command(n, ["nft", "-j", "-a", "list", "chain", *NFT_TABLE, NFT_CHAIN])
    if res.returncode != 0:
        if "No such file or directory" in res.stderr:
            return None
        raise StepFailed(f"nft list chain {' '.join(NFT_TABLE)} {NFT_CHAIN} on {n.name}: "
                         f"{res.stderr.strip() or f'exit {res.returncode}'}")
    try:
        items = json.loads(res.stdout).get("nftables", [])
    except (ValueError, AttributeError):
        raise StepFailed(f"nft on {n.name} printed no JSON ruleset") from None
    return [i["rule"] for i in items if isinstance(i, dict) and isinstance(i.get("rule"), dict)]


def _rule_handles(n: Node, vm: str, port: int) -> list[int]:
    """Handles of the rules that accept ``port`` for ``vm`` (none when the chain is gone)."""
    return [int(r["handle"]) for r in (_rules(n) or []) if _is_vnc_rule(r, vm, port)
            and isinstance(r.get("handle"), int)]


def _persistent_devices(dom: Any) -> tuple[ET.Element, ET.Element]:
    """The persistent XML of ``dom`` (with secrets, to define it back) and its <devices>."""
    libvirt = lv()
    root = ET.fromstring(dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE | libvirt.VIR_DOMAIN_XML_SECURE))
    devs = root.find("devices")
    if devs is None:
        raise StepFailed(f"the domain XML of {dom.name()} has no <devices>")
    return root, devs


@dataclass
class OpenVncPort(Step):
    """Allow TCP PORT for VM in nftables on the node (undo: delete that rule)."""

    TYPE = "hv.vnc.open-port"

    node: str
    vm: str
    port: int
    ORDER = 60

    def describe(self, ctx: Context) -> str:
        return (f"nftables on {self.node}: accept tcp dport {self.port} "
                f"(table {' '.join(NFT_TABLE)}, chain {NFT_CHAIN})")

    def check(self, ctx: Context) -> None:
        check_vm_name(self.vm)
        check_port(self.port)
        node_command(node(ctx, self.node), ["nft", "--version"])  # BadInput if unreachable

    def snapshot(self, ctx: Context) -> dict[str, Any]:
        """The matching rules that exist already (an interrupted apply's undo keeps them)."""
        return {"before": _rule_handles(node(ctx, self.node), self.vm, self.port)}

    def apply(self, ctx: Context, prior: dict[str, Any]) -> dict[str, Any]:
        n = node(ctx, self.node)
        if _rule_handles(n, self.vm, self.port):
            return {"added": False}
        table = {"family": NFT_TABLE[0], "name": NFT_TABLE[1]}
        chain = {"family": NFT_TABLE[0], "table": NFT_TABLE[1], "name": NFT_CHAIN,
                 "type": "filter", "hook": "input", "prio": 0, "policy": "accept"}
        rule = {**_chain_ref(), "comment": _comment(self.vm), "expr": _rule_expr(self.port)}
        res = _nft_json(n, [{"add": {"table": table}}, {"add": {"chain": chain}},
                            {"add": {"rule": rule}}], echo=True)
        if res.returncode != 0:
            raise StepFailed(f"nft add rule on {self.node}: "
                             f"{res.stderr.strip() or f'exit {res.returncode}'}")
        handle = None
        try:
            for item in json.loads(res.stdout).get("nftables", []):
                added = (item.get("add") or {}).get("rule") if isinstance(item, dict) else None
                if isinstance(added, dict) and isinstance(added.get("handle"), int):
                    handle = added["handle"]
        except (ValueError, AttributeError):
            handle = None
        return {"added": True, "handle": handle}

    def verify(self, ctx: Context, record: dict[str, Any]) -> None:
        if not _rule_handles(node(ctx, self.node), self.vm, self.port):
            raise StepFailed(f"no nftables rule for port {self.port} on {self.node}")

    def undo(self, ctx: Context, record: dict[str, Any]) -> None:
        """Delete the rule this step added, and only that one: the handle it recorded, or
        after an interrupted apply the matching rules that were not there before. A failed
        nft is a failed undo (the port stays open: rollback-incomplete)."""
        if record.get("added") is False:
            return
        n = node(ctx, self.node)
        handles = _rule_handles(n, self.vm, self.port)
        if isinstance(record.get("handle"), int):
            doomed = [h for h in handles if h == record["handle"]]
        elif "before" in record:
            doomed = [h for h in handles if h not in record["before"]]
        else:  # a record of an older version, which did not note the rules before it
            doomed = handles if not record.get("_partial") else []
        for h in doomed:
            res = _nft_json(n, [{"delete": {"rule": {**_chain_ref(), "handle": h}}}])
            if res.returncode != 0:
                raise StepFailed(f"cannot delete the nftables rule for port {self.port} on "
                                 f"{self.node} (handle {h}), the port stays open: "
                                 f"{res.stderr.strip() or f'exit {res.returncode}'}")


def survey(ctx: Context, cluster: Any, names: list[str],
           skipped_out: list[dict[str, Any]] | None = None) -> list[dict[str, Any]]:
    """One row per running VM with VNC: live/config/desired endpoints, probe, drift.

    Domains with an invalid name, and VNC targets in metadata that are not valid, are
    skipped with a warning (appended to ``skipped_out``): nothing they hold reaches a
    repair step."""
    libvirt = lv()
    cfg = settings(ctx)
    conns, _errors = cluster.try_all()
    rows: list[dict[str, Any]] = []
    skipped: list[dict[str, Any]] = [] if skipped_out is None else skipped_out
    for node_name, conn in conns.items():
        n = cluster.nodes[node_name]
        for dom in conn.listAllDomains(libvirt.VIR_CONNECT_LIST_DOMAINS_ACTIVE):
            if names and dom.name() not in names:
                continue
            live = [g for g in devices(dom.XMLDesc(0)).graphics if g["type"] == "vnc"]
            if not live:
                continue
            if not VM_NAME_RE.fullmatch(dom.name()):
                from debvisor_core import log

                log.warn(f"node {node_name}: skipped the domain named {dom.name()!r}: not a "
                         "valid VM name (use letters, digits, '.', '_', '+' or '-'); its VNC "
                         "is neither checked nor repaired")
                skipped.append({"node": node_name, "name": dom.name(), "reason": "bad name"})
                continue
            conf = [g for g in devices(dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE)).graphics
                    if g["type"] == "vnc"] if dom.isPersistent() else []
            meta = read_meta(dom) or {}
            want = meta.get("vnc")
            if want is not None and valid_target(want) is None:
                from debvisor_core import log

                log.warn(f"{dom.name()}: ignored its DebVisor VNC target {want!r} in the domain "
                         "metadata: it must be an IP address and a port in 5900-65535; set it "
                         f"again with `hvctl vnc target {dom.name()}`")
                skipped.append({"node": node_name, "name": dom.name(), "reason": "bad metadata"})
                want = None
            g = live[0]
            row: dict[str, Any] = {"vm": dom.name(), "node": node_name,
                                   "live": f"{g['listen']}:{g['port']}", "drift": [],
                                   "repairs": []}
            row["probe"] = probe(n, g["listen"] or "127.0.0.1", g["port"])
            if not row["probe"]["ok"]:
                row["drift"].append(f"VNC not answering: {row['probe']['error']}")
            elif cfg.get("require_auth") and "none" in row["probe"]["security"]:
                row["drift"].append("VNC offers no authentication (security type None)")
            if want:
                row["desired"] = f"{want['listen']}:{want['port']}"
                c = conf[0] if conf else None
                if c is None or (c["listen"], c["port"]) != (want["listen"], want["port"]):
                    row["drift"].append("persistent config differs from the target")
                    row["repairs"].append(SetVncTarget(node_name, dom.name(), want["listen"],
                                                       want["port"]))
                if (g["listen"], g["port"]) != (want["listen"], want["port"]):
                    row["drift"].append("live endpoint differs from the target (restart the VM)")
                if cfg.get("firewall") and not _rule_handles(n, dom.name(), want["port"]):
                    row["drift"].append(f"no nftables rule for port {want['port']}")
                    row["repairs"].append(OpenVncPort(node_name, dom.name(), want["port"]))
            rows.append(row)
    return rows
