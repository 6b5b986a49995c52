"""A smoke run of the benchmark with tiny sizes, so that it cannot rot. No timing is asserted."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).parent.parent


@pytest.mark.slow
def test_quick_benchmark_prints_the_table_and_writes_json(tmp_path: Path) -> None:
    output = tmp_path / "results.json"
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks", "--quick", "--output", str(output)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    results = json.loads(output.read_text())
    assert results["quick"] is True
    assert set(results) >= {
        "tracer_overhead",
        "startup_overhead",
        "at_scale",
        "redraw",
        "series",
        "start_methods",
    }
    assert all(r["ratio"] > 0 for r in results["startup_overhead"].values())
    assert (
        results["at_scale"]["close"]["bytes_per_event"] > 0 and results["at_scale"]["end_to_end"]["ratio"] > 0
    )
    assert all(r["ratio"] > 0 and r["cpu_ratio"] > 0 for r in results["tracer_overhead"].values())
    assert results["item_cost"]["traced_us"] > 0
    assert all(r["ratio"] > 0 for r in results["redraw"].values())
    assert results["series"]["peak_pss_mib"] > 0 and results["series"]["per_notebook_s"]
    for line in (
        "tracer: traced/untraced throughput",
        "tracer: traced/plain time to first batch",
        "tracer at scale: close / loop time",
        "redraw: slider to chart / ideal",
        "series: every notebook",
        "start method",
    ):
        assert line in done.stdout
