"""`sami-rt info`: the devices here, the sampling loop that runs and why, a bundle's evaluation."""

import json
import shutil
import subprocess
import sys

import numpy as np
import pytest
from click.testing import CliRunner

from sami_rt.cli.main import main
from sami_rt.runtime import DEFAULT_MODEL

from helpers import ROOT, cli_env


def invoke(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def test_info_reports_a_device_that_is_not_here_with_the_ones_that_are(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    import onnxruntime as ort

    if "CUDAExecutionProvider" in ort.get_available_providers():
        pytest.skip("this onnxruntime has a CUDA provider")
    r = invoke("info", "--device", "cuda")
    assert r.exit_code == 0, r.stderr
    out = r.stdout.splitlines()
    assert any(ln.startswith("backend: none for --device cuda: device 'cuda' needs onnxruntime's") for ln in out)
    devices = out[out.index("devices here:") + 1 : out.index("devices here:") + 4]
    assert [ln.split()[:2] for ln in devices] == [["cpu", "yes"], ["cuda", "no"], ["tensorrt", "no"]]
    assert "install onnxruntime-gpu" in devices[1] and "sami-rt[trt]" in devices[2]


def test_info_says_which_sampling_loop_runs_and_why(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    import sami_rt.sampling.loop as sampler

    r = invoke("info", "--device", "cpu")
    line = next(ln for ln in r.stdout.splitlines() if ln.startswith("sampling loop: "))
    if sampler.has_extension():
        assert line.startswith("sampling loop: the C++ sampler loop (compiled: _sampler")
    monkeypatch.setattr(sampler, "_sampler", None)  # as if the extension were not there
    r = invoke("info", "--device", "cpu")
    line = next(ln for ln in r.stdout.splitlines() if ln.startswith("sampling loop: "))
    assert line.startswith("sampling loop: numpy (the C++ sampler loop is not available: ")


@pytest.mark.parametrize("source_tree", [True, False])
def test_info_explains_a_package_without_its_compiled_loop(tmp_path, source_tree):
    """A copy of sami_rt without the compiled module (and without its models), imported first: in a source
    tree (cpp_ext/ beside it) info says so and how to build; elsewhere, that the extension is not built."""
    shutil.copytree(ROOT / "sami_rt", tmp_path / "sami_rt",
                    ignore=shutil.ignore_patterns("models", "_sampler*", "__pycache__"))
    if source_tree:
        (tmp_path / "cpp_ext").mkdir()
        (tmp_path / "cpp_ext" / "sampler.cpp").write_text("// the sources\n")
    code = ("import runpy, sys\n"  # an editable install's finder would bring the checkout's compiled module
            "sys.meta_path[:] = [f for f in sys.meta_path if 'editable' not in repr(f).lower()]\n"
            f"sys.argv = ['sami-rt', 'info', '--model', {str(DEFAULT_MODEL)!r}, '--device', 'cpu']\n"
            "runpy.run_module('sami_rt.cli.main', run_name='__main__')\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path, timeout=300,
                       env={**cli_env(), "PYTHONPATH": str(tmp_path)})
    assert r.returncode == 0, r.stderr
    line = next(ln for ln in r.stdout.splitlines() if ln.startswith("sampling loop: "))
    want = (f"`import sami_rt` found the source tree {(tmp_path / 'sami_rt').resolve()}, which holds no compiled "
            "sami_rt.sampling._sampler; build it there with `pip install -e .`") if source_tree else (
            f"the extension is not built in {(tmp_path / 'sami_rt').resolve()}")
    assert line.startswith("sampling loop: numpy (the C++ sampler loop is not available: ") and want in line, line


def test_info_prints_the_evaluation_as_aligned_key_value_lines(tmp_path, monkeypatch, fresh_seed):
    rng = np.random.default_rng(fresh_seed)
    dst = tmp_path / "b"
    shutil.copytree(DEFAULT_MODEL, dst)
    m = json.loads((dst / "manifest.json").read_text())
    floats = {f"figure_{i}": float(rng.normal() * 10.0 ** rng.integers(-4, 4)) for i in range(int(rng.integers(3, 9)))}
    curve = {str(t): float(rng.uniform()) for t in sorted(rng.choice(400, 12, replace=False))}
    m["evaluation"] = {**floats, "step": int(rng.integers(1, 10**5)), "curve": curve,
                       "per_axis": rng.uniform(size=int(rng.integers(20, 40))).tolist()}
    (dst / "manifest.json").write_text(json.dumps(m))
    monkeypatch.chdir(tmp_path)
    r = invoke("info", "--model", dst, "--device", "cpu")
    assert r.exit_code == 0, r.stderr
    out = r.stdout.splitlines()
    lines = out[out.index("evaluation at export:") + 1 :]
    assert len(lines) == len(m["evaluation"])
    col = {ln.index(":") for ln in lines}, {len(ln) - len(ln.split(":", 1)[1].lstrip()) for ln in lines}
    assert len(col[1]) == 1 and all(len(ln) <= 140 for ln in lines)  # the values start in one column
    got = {ln.split(":", 1)[0].strip(): ln.split(":", 1)[1].strip() for ln in lines}
    for k, v in floats.items():
        assert got[k] == f"{v:.4g}" and float(got[k]) == pytest.approx(v, rel=1e-3)
    assert got["step"] == str(m["evaluation"]["step"])
    assert got["per_axis"].endswith(f"... ({len(m['evaluation']['per_axis'])} in all)")
    first = next(iter(curve))
    assert got["curve"].startswith(f"{first}={curve[first]:.4g}, ")
