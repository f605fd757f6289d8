"""`debvisor lab up rpcd panel`: the panel served over the lab's rpcd, with the lab logins
`debvisor lab env` prints (no root needed: the libvirt lab is not part of it)."""

from __future__ import annotations

import json
import os
import re
import ssl
import stat
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

pytest.importorskip("uvicorn", reason="the panel extra: pip install -e '.[panel]'")


def test_lab_up_panel_serves_https_with_the_lab_logins(tmp_path: Path) -> None:
    env = {**os.environ, "DEBVISOR_LAB_DIR": str(tmp_path / "lab"),
           "DEBVISOR_STATE_DIR": str(tmp_path / "st")}
    env.pop("DEBVISOR_CONFIG", None)

    def dv(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "debvisor_core", *args], env=env,
                              capture_output=True, text=True, timeout=120,
                              stdin=subprocess.DEVNULL)

    try:
        up = dv("--json", "lab", "up", "rpcd", "panel")
        assert up.returncode == 0, up.stderr
        assert json.loads(up.stdout)["services"]["panel"]["status"] == "running"
        vars_ = json.loads(dv("--json", "lab", "env").stdout)
        url = vars_["DEBVISOR_PANEL_URL"]
        assert re.fullmatch(r"https://127\.0\.0\.1:\d+", url)
        assert (vars_["DEBVISOR_PANEL_USER"], vars_["DEBVISOR_PANEL_VIEWER"]) == ("admin", "viewer")
        text = dv("lab", "env").stdout
        assert f"export DEBVISOR_PANEL_URL={url}\n" in text and "DEBVISOR_CONFIG=" in text
        passwords = {}
        for user, var in (("admin", "DEBVISOR_PANEL_PASSWORD_FILE"),
                          ("viewer", "DEBVISOR_PANEL_VIEWER_PASSWORD_FILE")):
            f = Path(vars_[var])
            assert stat.S_IMODE(f.stat().st_mode) == 0o600
            passwords[user] = f.read_text().strip()
            assert passwords[user] not in text  # the file's path, never the password
        users = json.loads(dv("--json", "rpcd", "user", "list").stdout)
        assert {u["name"]: u["roles"] for u in users} == {"admin": ["admin"],
                                                           "viewer": ["viewer"]}
        rpcd = (tmp_path / "lab" / "rpcd" / "rpcd.toml").read_text()
        assert 'proxies = ["panel"]' in rpcd
        tls = ssl.create_default_context(cafile=vars_["DEBVISOR_PANEL_CA"])
        for user, role in (("admin", "admin"), ("viewer", "viewer")):
            with httpx.Client(base_url=url, verify=tls, headers={"origin": url},
                              timeout=15) as h:
                page = h.get("/login")
                assert page.status_code == 200
                csrf = re.search(r'name="csrf" value="([^"]+)"', page.text)
                assert csrf
                r = h.post("/login", data={"user": user, "password": passwords[user],
                                           "csrf": csrf.group(1)})
                assert r.status_code == 303 and r.headers["location"] == "/", r.text
                home = h.get("/")
                assert home.status_code == 200 and f"({role})" in home.text
        # the panel's calls reached rpcd as the users, through the panel's certificate
        calls = [json.loads(x) for x in
                 (tmp_path / "lab" / "rpcd" / "calls.jsonl").read_text().splitlines()]
        assert {"admin via=panel", "viewer via=panel"} <= {c.get("caller") for c in calls}
        pid = json.loads(dv("--json", "lab", "status").stdout)["services"]["panel"]["pid"]
        again = dv("--json", "lab", "up", "panel")  # idempotent: the running panel is kept
        assert again.returncode == 0, again.stderr
        assert json.loads(dv("--json", "lab", "env").stdout)["DEBVISOR_PANEL_URL"] == url
        assert json.loads(dv("--json", "lab", "status").stdout)["services"]["panel"]["pid"] == pid
    finally:
        assert dv("lab", "down", "panel", "rpcd").returncode == 0
    status = json.loads(dv("--json", "lab", "status").stdout)["services"]
    assert status["panel"]["running"] is False and status["rpcd"]["running"] is False
