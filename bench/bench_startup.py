"""Start-up cost: `debvisor --help` and `debvisor plugins list` against `python -c pass`,
with every first-party plugin and one extra site plugin (docs/example-plugin) installed.

The measurement uses a fresh venv with regular (not editable) installs of the core,
every first-party plugin and the example, as an operator's node would have: editable
installs add import hooks that slow every Python start-up, `python -c pass` too.

Each command runs N times (after warm-up runs that also fill the plugin cache); the
median wall time is compared, in the same run, with `python -c pass` and with
`kubectl version --client` when kubectl is on the machine. Targets: `debvisor --help`
≤ 4.5× `python -c pass`; `debvisor hv --help` ≤ 1.3× `debvisor --help` (it imports only
what describes `hv`).
"""

from __future__ import annotations

import os
import shutil
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
N = int(os.environ.get("BENCH_N", "40"))


def median_ms(argv: list[str], env: dict[str, str]) -> float:
    for _ in range(3):
        subprocess.run(argv, env=env, capture_output=True, check=True)
    times = []
    for _ in range(N):
        t = time.perf_counter()
        subprocess.run(argv, env=env, capture_output=True, check=True)
        times.append((time.perf_counter() - t) * 1000)
    return statistics.median(times)


def make_venv(path: Path) -> Path:
    subprocess.run(["/usr/bin/python3", "-m", "venv", str(path)], check=True)
    py = path / "bin" / "python"
    dists = [str(ROOT), *sorted(str(p.parent) for p in ROOT.glob("plugins/*/pyproject.toml")),
             str(ROOT / "docs" / "example-plugin")]
    subprocess.run([str(py), "-m", "pip", "install", "-q", *dists], check=True, capture_output=True)
    return py


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        print("building a fresh venv with regular installs…", flush=True)
        py = make_venv(Path(tmp) / "venv")
        env = {**os.environ, "DEBVISOR_STATE_DIR": tempfile.mkdtemp(), "XDG_CACHE_HOME": tmp}
        env.pop("DEBVISOR_CONFIG", None)
        env.pop("PYTHONPATH", None)
        debvisor = str(py.with_name("debvisor"))
        import json

        listed = json.loads(subprocess.run([debvisor, "--json", "plugins", "list", "--no-load"], env=env,
                                           capture_output=True, text=True, check=True).stdout)
        plugins = [p["name"] for p in listed if not p["builtin"]]
        base = median_ms([str(py), "-c", "pass"], env)
        rows = [("python -c pass", base)]
        rows.append(("debvisor --help", median_ms([debvisor, "--help"], env)))
        rows.append(("debvisor plugins list", median_ms([debvisor, "plugins", "list"], env)))
        rows.append(("debvisor hv --help", median_ms([debvisor, "hv", "--help"], env)))
        cold = {**env, "DEBVISOR_NO_HELP_CACHE": "1"}  # what the first run after an install costs
        rows.append(("debvisor --help (no help cache)", median_ms([debvisor, "--help"], cold)))
        rows.append(("debvisor hv --help (no help cache)",
                     median_ms([debvisor, "hv", "--help"], cold)))
        kubectl = shutil.which("kubectl") or next(
            (str(p) for p in sorted(Path("/usr/lib/google-cloud-sdk/bin").glob("kubectl*"))), None)
        if kubectl:
            rows.append(("kubectl version --client (peer)",
                         median_ms([kubectl, "version", "--client"], env)))
    print(f"start-up, median of {N} runs; plugins installed: {', '.join(plugins)}")
    for name, ms in rows:
        print(f"  {name:34s} {ms:7.1f} ms  {ms / base:5.1f}x python -c pass")
    ratio = rows[1][1] / base
    print(f"debvisor --help ratio: {ratio:.2f}x python -c pass (target <= 4.5x): "
          f"{'OK' if ratio <= 4.5 else 'OVER'}")
    hv = rows[3][1] / rows[1][1]
    print(f"debvisor hv --help ratio: {hv:.2f}x debvisor --help (target <= 1.3x): "
          f"{'OK' if hv <= 1.3 else 'OVER'}")
    print(f"without the help cache (the first --help after an install or upgrade): "
          f"{rows[4][1] / base:.2f}x python -c pass; hv --help {rows[5][1] / rows[4][1]:.2f}x "
          "debvisor --help")


if __name__ == "__main__":
    main()
