"""Issue 31: every benchmark states the machine it ran on (CPU model, bf16/AMX flags) and its peak RSS."""

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_every_benchmark_reports_its_machine():
    missing = []
    for f in sorted((ROOT / "benchmarks").glob("*.py")):
        tree = ast.parse(f.read_text())
        if not any(isinstance(n, ast.FunctionDef) and n.name == "main" for n in tree.body):
            continue  # a helper or a report over saved results, no measurement of its own
        called = {n.func.id for n in ast.walk(tree) if isinstance(n, ast.Call) and isinstance(n.func, ast.Name)}
        if not called & {"report_machine", "machine_line"}:
            missing.append(f.name)
    assert missing == [], missing


def test_report_machine_prints_the_flags_first_and_the_peak_rss_last(tmp_path):
    code = ("from sami_rt.hardware.cpuinfo import report_machine\n"
            "report_machine()\nbuf = bytearray(64 * 2**20)\nprint('the table')\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and r.stdout == "the table\n", r
    first, last = r.stderr.splitlines()
    assert first.startswith("CPU: ") and "avx512_bf16" in first and "amx_bf16" in first and "; load " in first
    assert last.startswith("peak RSS ") and int(last.split()[2]) >= 64, last
