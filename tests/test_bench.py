"""The benchmark keeps working: a tiny run of bench/run.py, read for its table (no timings)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_a_tiny_benchmark_run_measures_every_lookup_without_errors(tmp_path: Path) -> None:
    missing = [tool for tool in ("wrk", "nginx") if shutil.which(tool) is None]
    if missing:
        pytest.skip(f"the benchmark needs {missing} (.ci/run installs them)")
    out = tmp_path / "bench.json"
    run = subprocess.run(
        [
            sys.executable,
            str(ROOT / "bench" / "run.py"),
            "--keys",
            "60",
            "--pool",
            "20",
            "--duration",
            "1",
            "--connections",
            "4",
            "--threads",
            "1",
            "--workers",
            "1",
            "--backends",
            "sqlite",
            "--no-variants",
            "--import-files",
            "",
            "--json",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    results = json.loads(out.read_text())["lookups"]
    measured = {r["what"] for r in results}
    assert {"vks-fpr", "vks-keyid", "vks-email", "hkp-get", "hkp-index", "wkd"} <= measured
    assert any(w.startswith("nginx static") for w in measured)
    assert any(w.startswith("caching front") for w in measured)
    for r in results:
        # Every answer was a 2xx: the paths the benchmark asks for are all found.
        assert r["errors"] == 0, r
        assert r["requests_per_second"] > 0, r
    assert "| vks-fpr | sqlite |" in run.stdout
