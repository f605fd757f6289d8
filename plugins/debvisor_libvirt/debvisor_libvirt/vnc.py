"""VNC consoles: probing (RFB banner and security types), targets, port ranges, firewall.

``[hv.vnc]`` config: ``port_range = [5900, 5999]`` (auto ports come from here),
``firewall = true`` (open each assigned port with nftables on the node, table
``inet debvisor`` chain ``vnc``), ``require_auth = true`` (a VNC server offering
security type None is drift). TLS and SASL are libvirt's qemu.conf settings
(``vnc_tls``, ``vnc_tls_x509_cert_dir``, ``vnc_tls_x509_verify``, ``vnc_sasl``); the probe
reports what each server offers (VeNCrypt = TLS, SASL, VNC password, None).
"""

from __future__ import annotations

import ipaddress
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from typing import Any

from debvisor_core.context import Context
from debvisor_core.engine import Step
from debvisor_core.errors import BadInput, StepFailed

from .domains import devices, read_meta, write_meta
from .nodes import Node, lv, node, node_command, tcp_connect
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
        record: dict[str, Any] = {"graphics": graphics, "meta": meta}
        if passwd is not None:
            record["passwd_file"] = _stash_passwd(ctx, self.vm, passwd)
        return record

    def apply(self, ctx: Context, prior: dict[str, Any]) -> dict[str, Any]:
        from debvisor_core.secrets import read_secret

        dom = domain(ctx, self.node, self.vm)
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
        meta = prior.get("meta") or {"registered": False}
        write_meta(domain(ctx, self.node, self.vm),
                   {**meta, "vnc": {"listen": self.listen, "port": self.port}})
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
        write_meta(domain(ctx, self.node, self.vm), record.get("meta"))
        if record.get("passwd_file"):  # restored: the copy is no longer needed
            _passwd_path(ctx, record["passwd_file"]).unlink(missing_ok=True)


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


def _unstash_passwd(ctx: Context, name: str) -> str:
    from debvisor_core.secrets import read_secret

    path = _passwd_path(ctx, name)
    if not path.exists():
        raise StepFailed(f"the saved VNC password {path} is gone; cannot restore it")
    return read_secret(path, "saved VNC password").decode()


def _nft(n: Node, *args: str) -> Any:
    return node_command(n, ["nft", *args])


def _rule_handles(n: Node, vm: str, port: int) -> list[str]:
    res = _nft(n, "-a", "list", "chain", *NFT_TABLE, NFT_CHAIN)
    if res.returncode != 0:
        return []
    out = []
    for line in res.stdout.splitlines():
        if f"dport {port} " in line and f'"hv-vnc-{vm}"' in line and "# handle" in line:
            out.append(line.rsplit("# handle", 1)[1].strip())
    return out


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
        node_command(node(ctx, self.node), ["nft", "--version"])  # BadInput if unreachable

    def apply(self, ctx: Context, prior: dict[str, Any]) -> dict[str, Any]:
        n = node(ctx, self.node)
        if _rule_handles(n, self.vm, self.port):
            return {"added": False}
        for args in (("add", "table", *NFT_TABLE),
                     ("add", "chain", *NFT_TABLE, NFT_CHAIN, "{", "type", "filter", "hook",
                      "input", "priority", "0", ";", "policy", "accept", ";", "}"),
                     ("add", "rule", *NFT_TABLE, NFT_CHAIN, "tcp", "dport", str(self.port),
                      "accept", "comment", f'"hv-vnc-{self.vm}"')):
            res = _nft(n, *args)
            if res.returncode != 0:
                raise StepFailed(f"nft {' '.join(args[:3])} on {self.node}: {res.stderr.strip()}")
        return {"added": True}

    def verify(self, ctx: Context, record: dict[str, Any]) -> None:
        if not _rule_handles(node(ctx, self.node), self.vm, self.port):
            raise StepFailed(f"no nftables rule for port {self.port} on {self.node}")

    def undo(self, ctx: Context, record: dict[str, Any]) -> None:
        if record.get("added") is False:
            return
        n = node(ctx, self.node)
        for h in _rule_handles(n, self.vm, self.port):
            _nft(n, "delete", "rule", *NFT_TABLE, NFT_CHAIN, "handle", h)


def survey(ctx: Context, cluster: Any, names: list[str]) -> list[dict[str, Any]]:
    """One row per running VM with VNC: live/config/desired endpoints, probe, drift."""
    libvirt = lv()
    cfg = settings(ctx)
    conns, _errors = cluster.try_all()
    rows: list[dict[str, Any]] = []
    for node_name, conn in conns.items():
        n = cluster.nodes[node_name]
        for dom in conn.listAllDomains(libvirt.VIR_CONNECT_LIST_DOMAINS_ACTIVE):
            if names and dom.name() not in names:
                continue
            live = [g for g in devices(dom.XMLDesc(0)).graphics if g["type"] == "vnc"]
            if not live:
                continue
            conf = [g for g in devices(dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE)).graphics
                    if g["type"] == "vnc"] if dom.isPersistent() else []
            meta = read_meta(dom) or {}
            want = meta.get("vnc")
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
