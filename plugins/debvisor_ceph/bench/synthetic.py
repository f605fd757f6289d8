"""A synthetic cluster dump scaled from the recorded lab dump: HOSTS×PER_HOST OSDs, a 3×
replicated pool with host failure domain and PGs placed by weight (with some skew)."""

from __future__ import annotations

import copy
import json
import random
from pathlib import Path
from typing import Any

DATA = Path(__file__).resolve().parent.parent / "tests" / "data" / "lab-healthy.json"


def scaled_dump(hosts: int = 50, per_host: int = 20, pg_num: int = 16384, seed: int = 7) -> dict[str, Any]:
    rnd = random.Random(seed)
    base = json.loads(DATA.read_text())
    d = copy.deepcopy(base)
    n = hosts * per_host
    kb = 4 * 1024**3  # 4 TiB per OSD, in KiB
    tree_nodes: list[dict[str, Any]] = [{"id": -1, "name": "default", "type": "root", "type_id": 11,
                                         "children": [-2 - h for h in range(hosts)]}]
    df_nodes, osds = [], []
    host_of = {}
    for h in range(hosts):
        ids = list(range(h * per_host, (h + 1) * per_host))
        tree_nodes.append({"id": -2 - h, "name": f"node{h:03d}", "type": "host", "type_id": 1,
                           "children": ids})
        for i in ids:
            host_of[i] = h
            tree_nodes.append({"id": i, "name": f"osd.{i}", "type": "osd", "type_id": 0,
                               "device_class": "hdd", "crush_weight": 3.63869, "depth": 2, "exists": 1,
                               "status": "up", "reweight": 1})
    weights = [rnd.uniform(0.8, 1.2) for _ in range(n)]  # skew: some OSDs attract more PGs
    pgs = []
    count = [0] * n
    for p in range(pg_num):
        up: list[int] = []
        used_hosts: set[int] = set()
        while len(up) < 3:
            o = rnd.choices(range(n), weights)[0] if rnd.random() < 0.1 else rnd.randrange(n)
            if host_of[o] in used_hosts:
                continue
            used_hosts.add(host_of[o])
            up.append(o)
        for o in up:
            count[o] += 1
        pgs.append({"pgid": f"2.{p:x}", "state": "active+clean", "up": up, "acting": up,
                    "up_primary": up[0], "acting_primary": up[0]})
    mean = sum(count) / n
    for i in range(n):
        util = 55.0 * count[i] / mean + rnd.uniform(-2, 2)
        if i == 17:
            util = 87.0  # one near-full OSD
        df_nodes.append({"id": i, "device_class": "hdd", "name": f"osd.{i}", "type": "osd", "type_id": 0,
                         "crush_weight": 3.63869, "depth": 2, "reweight": 1, "kb": kb,
                         "kb_used": int(kb * util / 100), "kb_avail": int(kb * (1 - util / 100)),
                         "utilization": util, "var": util / 55.0, "pgs": count[i], "status": "up"})
        osds.append({"osd": i, "up": 1, "in": 1, "weight": 1, "state": ["exists", "up"], "uuid": f"u{i}"})
    osds[5].update(up=0, state=["exists"])
    df_nodes[5]["status"] = "down"
    d["osd_tree"] = {"nodes": tree_nodes, "stray": []}
    d["osd_df"] = {"nodes": df_nodes, "stray": [], "summary": {}}
    d["osd_dump"]["osds"] = osds
    d["osd_dump"]["pg_upmap_items"] = []
    d["pgs_brief"] = pgs
    d["crush_rules"] = [{"rule_id": 0, "rule_name": "replicated_rule", "steps": [
        {"op": "take", "item": -1}, {"op": "chooseleaf_firstn", "num": 0, "type": "host"}, {"op": "emit"}]}]
    for p in d["pools"]:
        if p["pool_name"] == "rbd":
            p.update(size=3, min_size=2, pg_num=pg_num)
    for p in d["df"]["pools"]:
        if p["name"] == "rbd":
            p["stats"].update(stored=600 * 1024**4, bytes_used=1800 * 1024**4, max_avail=400 * 1024**4,
                              percent_used=0.82)
    return d
