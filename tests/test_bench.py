"""`sami-rt bench` on the default model: every figure is produced, the baseline agrees with the runtime."""

import json
import subprocess
import sys

import numpy as np
import pytest

from sami_rt.cli.benchmark import gpu_peak


def test_bench_cli_writes_every_figure(tmp_path):
    pytest.importorskip("torch")
    out = tmp_path / "bench.json"
    r = subprocess.run([sys.executable, "-m", "sami_reference.bench", "--device", "cpu", "--batch", "1", "--batch", "3",
                        "--repeats", "3", "--warmup", "1", "-n", "2", "--steps", "4", "--frames", "12",
                        "--json", str(out)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    res = json.loads(out.read_text())
    assert [c["batch"] for c in res["calls"]] == [1, 3]
    for c in res["calls"]:
        for k in ("guided_eps", "encoder", "guided_eps_torch", "encoder_torch"):
            assert c[k]["median_ms"] > 0 and c[k]["iqr_ms"] >= 0
        assert c["guided_eps_speedup"] > 0 and c["guided_eps_max_abs_diff"] < 1e-3
    g = res["generate"]
    assert g["backend_calls"] == 4 and 0 <= g["loop_share"] < 1 and g["torch_seconds"] > 0
    v = res["video"]
    assert v["frames"] == 12 and v["size"] == "640x480" and v["decode_fps"] > 0 and v["encode_fps"] > 0
    assert v["rounds"] == len(v["encode_vs_decode_per_round"]) >= 3
    assert v["encode_vs_decode"] == pytest.approx(float(np.median(v["encode_vs_decode_per_round"])))
    assert v["luma"] is True and v["decode_luma_fps"] > 0 and v["encode_vs_decode_luma"] > 0  # grey model, yuv420p
    assert res["flops_per_sample"]["guided_eps"] > 0
    assert "speed-up" in r.stdout and "generate:" in r.stdout and "of decoding (median of the rounds:" in r.stdout
    assert "frames read as luma planes; decoding alone to luma planes" in r.stdout


def test_bench_without_the_baseline_needs_no_torch(tmp_path):
    r = subprocess.run([sys.executable, "-c", "import sys, runpy; sys.modules['torch'] = None; "
                        "sys.argv = ['sami-rt', 'bench', '--device', 'cpu', '--batch', '2', '--repeats', '2', "
                        "'--warmup', '0', '-n', '2', '--steps', '2', '--frames', '5']; "
                        "runpy.run_module('sami_rt.cli.main', run_name='__main__')"], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert "baseline: none" in r.stdout


def test_gpu_peak_table_prefers_the_specific_name():
    assert gpu_peak("NVIDIA H100 PCIe") == (51.0, 756.0)
    assert gpu_peak("NVIDIA H100 80GB HBM3") == (67.0, 989.0)
    assert gpu_peak("Some Other GPU") is None and gpu_peak(None) is None


def test_sami_rt_code_never_names_torch_or_the_reference_package():
    """Imports and string constants of every sami_rt module (docstrings aside): the comparison baseline is
    handed in by sami_reference.bench, so the runtime package names neither the framework nor that package."""
    import ast
    from pathlib import Path

    import sami_rt

    hits = []
    for path in Path(sami_rt.__file__).parent.rglob("*.py"):
        tree = ast.parse(path.read_text())
        docs = {id(n.body[0].value) for n in ast.walk(tree)
                if isinstance(n, (ast.Module, ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)) and n.body
                and isinstance(n.body[0], ast.Expr) and isinstance(n.body[0].value, ast.Constant)}
        for node in ast.walk(tree):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                names = [node.module or ""]
            elif isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docs:
                names = [node.value]
            hits += [f"{path.name}:{node.lineno}: {n!r}" for n in names
                     if "torch" in n.lower() or "sami_reference" in n]
    assert not hits, hits
