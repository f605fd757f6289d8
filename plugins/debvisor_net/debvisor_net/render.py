"""The human rendering of a network snapshot (`net show`)."""

from __future__ import annotations

from typing import Any

PROTOS = {2: "kernel", 3: "boot", 4: "static", 16: "dhcp", 186: "bgp", 188: "ospf"}


def _link_line(name: str, link: dict[str, Any]) -> str:
    words = [f"{name:<14}", f"{link.get('kind') or 'device':<8}",
             "UP  " if link.get("up") else "DOWN", f"mtu {link.get('mtu')}",
             str(link.get("mac") or "")]
    if link.get("master"):
        words.append(f"master {link['master']}")
    if link.get("bond"):
        b = link["bond"]
        words.append(f"bond {b.get('mode')} miimon {b.get('miimon')} slaves "
                     f"{','.join(b.get('slaves') or []) or '-'}"
                     + (f" primary {b['primary']}" if b.get("primary") else ""))
    if link.get("bridge"):
        b = link["bridge"]
        words.append(f"stp {'on' if b.get('stp') else 'off'}"
                     + (f" fd {b['forward_delay'] / 100:g}s" if b.get("forward_delay") else ""))
    if link.get("vlan"):
        words.append(f"vlan {link['vlan'].get('id')} on {link['vlan'].get('link')}")
    return "  " + " ".join(w for w in words if w)


def route_text(r: dict[str, Any]) -> str:
    words = [r["dst"]]
    if r.get("gateway"):
        words += ["via", r["gateway"]]
    if r.get("dev"):
        words += ["dev", r["dev"]]
    if r.get("table", 254) != 254:
        words += ["table", str(r["table"])]
    words += ["proto", PROTOS.get(r.get("proto") or 0, str(r.get("proto")))]
    if r.get("metric") is not None:
        words += ["metric", str(r["metric"])]
    return " ".join(words)


def state_text(data: dict[str, Any]) -> str:
    lines = ["Links:"]
    lines += [_link_line(n, link) for n, link in sorted(data["links"].items())]
    lines.append("Addresses:")
    lines += [f"  {a['dev']:<14} {a['address']}" for a in data["addresses"]] or ["  (none)"]
    lines.append("Routes:")
    lines += [f"  {route_text(r)}" for r in data["routes"]] or ["  (none)"]
    if data.get("rules"):
        lines.append("Rules:")
        lines += ["  " + " ".join(f"{k} {v}" for k, v in sorted(r.items()) if v is not None)
                  for r in data["rules"]]
    p = data.get("pending")
    if p:
        lines.append(f"A change waits for confirmation: {p['seconds_left']:.0f} s left "
                     "(`net confirm` keeps it, `net rollback` restores the prior state)")
    return "\n".join(lines)
