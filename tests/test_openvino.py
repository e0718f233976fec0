"""The OpenVINO backend (issue 31): its outputs against onnxruntime's on fresh random inputs, the compile cache,
the bf16 rule (the CPU's flags replaced to play a CPU with and without bf16), and the one-line error without
the package. Tests that run OpenVINO skip where it is not installed; the others run everywhere."""

import sys

import numpy as np
import pytest
from click.testing import CliRunner

from sami_rt.backends import BackendError, device_report, open_backend
from sami_rt.backends.precision import normalize_precision
from sami_rt.contract.bundle import read_bundle
from sami_rt.cli.main import main
from sami_rt.contract.format import GRAPHS
from sami_rt.runtime import Runtime, resolve_model

# The model these tests run OpenVINO on: disks-small, whose guidance scale of 3 keeps float32 rounding between the
# backends within their tolerances (the default, disks-3d, samples at 50: test_the_default_model_opens_and_agrees).
OV_MODEL = "disks-small"
NO_BF16 = "processor\t: 0\nmodel name\t: Test CPU\nflags\t\t: fpu sse2 avx avx2 fma\n"
AMX = "processor\t: 0\nmodel name\t: Test CPU\nflags\t\t: fpu sse2 avx2 avx512f avx512_bf16 amx_tile amx_bf16\n"


@pytest.fixture(scope="module")
def bundle():
    return read_bundle(resolve_model(OV_MODEL))


@pytest.fixture
def cpu_without_bf16(monkeypatch):
    import sami_rt.hardware.cpuinfo

    monkeypatch.setattr(sami_rt.hardware.cpuinfo, "read_cpuinfo", lambda: NO_BF16)


def invoke(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def feeds(bundle, name, rng, B):
    dims = dict(C=bundle.manifest.image.channels, H=bundle.manifest.image.height, W=bundle.manifest.image.width, D=bundle.manifest.latent_dim)
    return GRAPHS[name].example_inputs(rng, B, dims, bundle.manifest.T)


# ------------------------------------------------------------------------------------- everywhere
def test_batch_bucket_ladder():
    from sami_rt.backends.openvino import batch_bucket

    assert [batch_bucket(b) for b in range(1, 18)] == [1, 2, 3, 4, 6, 6, 8, 8, 12, 12, 12, 12, 16, 16, 16, 16, 24]
    assert all(b <= batch_bucket(b) <= max(4, 1.5 * b) for b in range(1, 5000))


def test_precision_names():
    assert [normalize_precision(p) for p in ("auto", "f32", "fp16", "bf16", "bfloat16", "FLOAT32")] == [
        "auto", "float32", "float16", "bfloat16", "bfloat16", "float32"]
    with pytest.raises(BackendError, match="unknown precision 'int8'"):
        normalize_precision("int8")


def test_without_openvino_one_line_names_the_install_command(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "openvino", None)  # import openvino raises ImportError
    monkeypatch.chdir(tmp_path)
    r = invoke("generate", "-n", "1", "--device", "openvino")
    assert r.exit_code == 1 and r.stdout == "", (r.exception, r.stderr)
    assert r.stderr.count("\n") == 1 and r.stderr.startswith("Error: "), r.stderr
    assert "device 'openvino' is not available here" in r.stderr and 'pip install "sami-rt[openvino]"' in r.stderr
    assert list(tmp_path.iterdir()) == []


def test_bf16_on_onnxruntime_is_one_note_and_float32(bundle):
    be = open_backend(bundle, "cpu", 1, "bf16")
    assert be.precision == "float32" and len(be.notes) == 1 and "running float32" in be.notes[0]


def test_info_names_the_cpu_and_its_bf16(cpu_without_bf16):
    r = invoke("info")
    assert r.exit_code == 0, r.output
    assert "CPU: Test CPU; this CPU has neither AMX-BF16 nor AVX512-BF16" in r.stdout
    assert "amx_bf16 no" in r.stdout and any(row[0] == "openvino" for row in device_report())


# ------------------------------------------------------------------------------- with OpenVINO
@pytest.fixture(scope="module")
def ov_f32(bundle):
    pytest.importorskip("openvino")
    return open_backend(bundle, "openvino", 0, "f32")


def test_openvino_matches_onnxruntime(bundle, ov_f32, fresh_seed):
    rng = np.random.default_rng(fresh_seed)
    ort_be = open_backend(bundle, "cpu", 0, "f32")
    for name in ("guided_eps", "denoiser", "encoder"):
        B = int(rng.integers(1, 9))
        f = feeds(bundle, name, rng, B)
        call = {"guided_eps": lambda b: b.guided_eps(**f), "denoiser": lambda b: b.denoise(**f),
                "encoder": lambda b: b.encode(f["x"])}[name]
        got, want = call(ov_f32), call(ort_be)
        for g, w in zip(got if name == "encoder" else [got], want if name == "encoder" else [want]):
            assert g.shape == w.shape and g.dtype == np.float32
            np.testing.assert_allclose(g, w, rtol=1e-4, atol=1e-4 * float(np.abs(w).max()), err_msg=name)


def test_compile_cache_one_compile_per_shape(bundle, fresh_seed):
    pytest.importorskip("openvino")
    be = open_backend(bundle, "openvino", 1, "f32")
    rng = np.random.default_rng(fresh_seed)
    B = int(rng.choice([3, 4, 6, 8]))  # not the batch of 2 that the check against onnxruntime may have compiled
    c0 = be.compiles
    a = be.guided_eps(**feeds(bundle, "guided_eps", rng, B))
    assert be.compiles == c0 + 1
    f = feeds(bundle, "guided_eps", rng, B)
    b1, b2 = be.guided_eps(**f), be.guided_eps(**f)  # the same shape again: no compile
    assert be.compiles == c0 + 1 and a.shape == b1.shape and np.array_equal(b1, b2)
    be.guided_eps(**feeds(bundle, "guided_eps", rng, 2 * B))
    assert be.compiles == c0 + 2
    f5 = feeds(bundle, "guided_eps", rng, 5)  # 5 rows run in the 6-row shape: one compile for 5 and 6
    c1 = be.compiles
    out5 = be.guided_eps(**f5)
    be.guided_eps(**feeds(bundle, "guided_eps", rng, 6))
    assert be.compiles <= c1 + 1 and out5.shape[0] == 5
    # the padded rows change nothing: each row is its own
    one = be.guided_eps(**{k: v[:1] for k, v in f5.items()})
    np.testing.assert_allclose(out5[:1], one, rtol=1e-5, atol=1e-5 * float(np.abs(one).max()))


def test_warm_up_compiles_the_ladder_so_no_later_call_compiles(bundle, fresh_seed):
    """Runtime.warm_up (what serve calls at start-up) compiles each graph at every ladder size up to the batch
    asked for, once; afterwards no call of 1..max_batch rows compiles, and a second warm-up compiles nothing."""
    pytest.importorskip("openvino")
    from sami_rt.backends.openvino import batch_sizes

    rt = Runtime(OV_MODEL, "openvino", 1, "f32")
    rng = np.random.default_rng(fresh_seed)
    max_batch = int(rng.integers(5, 13))
    lines = []
    done = rt.warm_up(max_batch, log=lines.append)
    sizes = batch_sizes(max_batch)
    assert sizes[-1] >= max_batch and len(lines) == len(sizes)
    cached = {name: {dict(k)["x_t" if name != "encoder" else "x"][0] for k in rt.backend._compiled[name]}
              for name in ("encoder", "denoiser", "guided_eps")}
    assert all(set(sizes) <= got for got in cached.values()), cached
    assert done <= 3 * len(sizes)  # the check against onnxruntime may have compiled a size already
    c0 = rt.backend.compiles
    for B in rng.permutation(np.arange(1, max_batch + 1))[:4]:
        rt.backend.guided_eps(**feeds(bundle, "guided_eps", rng, int(B)))
        rt.backend.encode(feeds(bundle, "encoder", rng, int(B))["x"])
    assert rt.backend.compiles == c0 and rt.warm_up(max_batch) == 0
    assert Runtime(OV_MODEL, "cpu", 1).warm_up(max_batch) == 0  # onnxruntime: nothing to prepare


def test_generate_through_the_loop_matches_onnxruntime(fresh_seed):
    pytest.importorskip("openvino")
    seed = int(np.random.default_rng(fresh_seed).integers(2**31))
    ov = Runtime(OV_MODEL, device="openvino", threads=1, precision="f32")
    ort = Runtime(OV_MODEL, device="cpu", threads=1)
    a, b = ov.generate(n=3, seed=seed, steps=5), ort.generate(n=3, seed=seed, steps=5)
    np.testing.assert_allclose(a.x, b.x, atol=1e-4)
    assert ov.backend.name.startswith("OpenVINO") and ov.backend.precision == "float32"


def test_bf16_without_cpu_support_is_one_line_and_float32(cpu_without_bf16, tmp_path, monkeypatch):
    pytest.importorskip("openvino")
    rt = Runtime(OV_MODEL, device="openvino", threads=1, precision="bf16")
    assert rt.backend.precision == "float32" and len(rt.backend.notes) == 1
    assert "neither AMX-BF16 nor AVX512-BF16" in rt.backend.notes[0] and "running float32" in rt.backend.notes[0]
    monkeypatch.chdir(tmp_path)
    r = invoke("generate", "--model", OV_MODEL, "-n", "1", "--steps", "2", "--device", "openvino",
               "--precision", "bf16", "-o", "g.png")
    assert r.exit_code == 0, r.stderr
    notes = [ln for ln in r.stderr.splitlines() if ln.startswith("note:")]
    assert len(notes) == 1 and "running float32" in notes[0], r.stderr
    # --device auto with bf16 on such a CPU: onnxruntime, float32, the same one note
    assert open_backend(rt.bundle, "auto", 1, "bf16").name.startswith("onnxruntime")


def test_bf16_where_the_cpu_has_it_is_close_to_float32(bundle, ov_f32, monkeypatch, fresh_seed):
    import sami_rt.hardware.cpuinfo

    monkeypatch.setattr(sami_rt.hardware.cpuinfo, "read_cpuinfo", lambda: AMX)
    be = open_backend(bundle, "auto", 0, "bf16")  # auto + bf16 on a bf16 CPU: OpenVINO
    assert be.device == "openvino" and be.precision == "bfloat16" and not be.notes
    rng = np.random.default_rng(fresh_seed)
    f = feeds(bundle, "guided_eps", rng, 4)
    got, want = be.guided_eps(**f), ov_f32.guided_eps(**f)
    # bf16 keeps 8 bits of mantissa: relative error ~1e-2 of the output's range (the issue: 2.4e-3..1e-2)
    assert np.abs(got - want).max() <= 3e-2 * np.abs(want).max()
    x = feeds(bundle, "encoder", rng, 8)["x"]
    (mu, _), (mu32, _) = be.encode(x), ov_f32.encode(x)
    assert np.abs(mu - mu32).max() <= 3e-2 * max(1.0, np.abs(mu32).max())


def _layout(d, prefix=""):
    if isinstance(d, dict):
        return {p for k, v in d.items() for p in _layout(v, f"{prefix}/{k}")} | {prefix}
    if isinstance(d, list):
        return {p for v in d[:1] for p in _layout(v, prefix + "[]")} | {prefix}
    return {prefix}


def test_bench_openvino_bf16_json_has_the_same_layout(tmp_path):
    import json

    pytest.importorskip("openvino")
    quick = ["--batch", "2", "--repeats", "2", "--warmup", "0", "-n", "2", "--steps", "2", "--frames", "5"]
    layouts = []
    for device, precision in (("cpu", "auto"), ("openvino", "bf16")):
        out = tmp_path / f"{device}.json"
        r = invoke("bench", "--model", OV_MODEL, "--device", device, "--precision", precision, *quick, "--json", out)
        assert r.exit_code == 0, r.stderr
        assert "CPU: " in r.stdout and "peak RSS" in r.stdout
        layouts.append(_layout(json.loads(out.read_text())))
    assert layouts[0] == layouts[1]
    r = invoke("bench", "--model", OV_MODEL, "--compare", "--batch", "2", "--repeats", "2", "--warmup", "0",
               "--json", tmp_path / "c.json")
    assert r.exit_code == 0, r.stderr
    res = json.loads((tmp_path / "c.json").read_text())
    labels = set(res["meta"]["entries"])
    assert {"onnxruntime cpu f32", "OpenVINO f32"} <= labels and len(res["compare"]) == 2
    assert all(e["max_rel_diff"] < 1e-4 for r in res["compare"] for k, e in r["entries"].items() if "f32" in k)


def test_a_graph_openvino_gets_wrong_is_refused(bundle, monkeypatch, tmp_path):
    """OpenVINO's output checked against onnxruntime's once per bundle (openvino_check.py): a fault is one line."""
    pytest.importorskip("openvino")
    import sami_rt.backends.openvino_check as chk

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    real = chk.errors_against_onnxruntime
    errs = real(open_backend(bundle, "openvino", 1, "f32"), bundle)  # the first open checked and remembered
    assert all(e < 1e-4 for e in errs.values()), errs
    assert chk.cache_file().exists()
    monkeypatch.setattr(chk, "errors_against_onnxruntime", lambda f32, b: {**errs, "guidance term of guided_eps": 1.3})
    open_backend(bundle, "openvino", 1, "f32")  # remembered: not checked again
    chk.cache_file().unlink()
    with pytest.raises(BackendError, match="computes bundle .* wrongly here .*guidance term of guided_eps by 1.3"):
        open_backend(bundle, "openvino", 1, "f32")
    be = open_backend(bundle, "auto", 1, "bf16")  # auto falls back to onnxruntime, with a note
    assert be.name.startswith("onnxruntime")


def test_the_default_model_opens_and_agrees(tmp_path, monkeypatch, fresh_seed):
    """disks-3d through OpenVINO: its check against onnxruntime passes (it failed, 1.1 of the guidance term's
    range, while a square weight was shared by a Conv and its ConvTranspose), and guided_eps agrees at batch 5."""
    pytest.importorskip("openvino")
    import sami_rt.backends.openvino_check as chk

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    b = read_bundle(resolve_model(None))
    ov = open_backend(b, "openvino", 1, "f32")
    errs = chk.errors_against_onnxruntime(ov, b)
    assert all(e < 1e-4 for e in errs.values()), errs
    f = feeds(b, "guided_eps", np.random.default_rng(fresh_seed), 5)
    want = open_backend(b, "cpu", 1, "f32").guided_eps(**f)
    assert np.abs(ov.guided_eps(**f) - want).max() <= 1e-4 * np.abs(want).max()


def _shared_pair(rng):
    """The minimal case of the OpenVINO fault: a Conv and a ConvTranspose on one 64x64 weight, as a guidance
    graph has them; the ONNX model and feeds."""
    from onnx import TensorProto, helper, numpy_helper

    C, H = 64, 16
    w = numpy_helper.from_array((rng.standard_normal((C, C, 3, 3)) * 0.1).astype(np.float32), "W")
    nodes = [helper.make_node("Conv", ["x", "W"], ["y"], strides=[2, 2], pads=[1] * 4, kernel_shape=[3, 3]),
             helper.make_node("ConvTranspose", ["g", "W"], ["gx"], strides=[2, 2], pads=[1] * 4, kernel_shape=[3, 3],
                              output_padding=[1, 1])]
    io = lambda n, s: helper.make_tensor_value_info(n, TensorProto.FLOAT, s)  # noqa: E731
    graph = helper.make_graph(nodes, "pair", [io("x", [2, C, H, H]), io("g", [2, C, H // 2, H // 2])],
                              [io("y", None), io("gx", None)], [w])
    m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    feed = {"x": rng.standard_normal((2, C, H, H)).astype(np.float32),
            "g": rng.standard_normal((2, C, H // 2, H // 2)).astype(np.float32)}
    return m, feed


def _agrees_with_onnxruntime(ov_mod, model, onnx_model, feed):
    import onnxruntime as ort

    want = ort.InferenceSession(onnx_model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, feed)
    c = ov_mod.Core().compile_model(model, "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    got = c(feed)
    for i, w_ in enumerate(want):
        assert np.abs(got[c.outputs[i]] - w_).max() <= 1e-5 * np.abs(w_).max(), i


def test_the_backend_unshares_a_weight_at_load(fresh_seed):
    """The backend's cure in OpenVINO's own graph (backends/openvino.py, unshare_constants), for a graph whose
    ONNX shares the weight as every exported guidance graph does: one copy made, every weight constant then
    read by one node, and OpenVINO agrees with onnxruntime."""
    ov_mod = pytest.importorskip("openvino")
    from sami_rt.backends.openvino import unshare_constants

    m, feed = _shared_pair(np.random.default_rng(fresh_seed))
    model = ov_mod.Core().read_model(m.SerializeToString(), b"")
    assert unshare_constants(model) == 1
    consts = [op for op in model.get_ordered_ops() if op.get_type_name() == "Constant"
              and len(op.get_output_shape(0)) >= 2]
    assert len(consts) == 2 and all(len(c.output(0).get_target_inputs()) == 1 for c in consts)
    assert unshare_constants(model) == 0
    _agrees_with_onnxruntime(ov_mod, model, m, feed)


def test_spatial_means_become_poolings_with_the_same_values(fresh_seed):
    """backends/openvino.py, pool_spatial_means: a ReduceMean over both spatial axes of a 4-d tensor, keeping
    them, becomes an AvgPool over the whole image, and OpenVINO's outputs stay onnxruntime's; means over other
    axes, or dropping the axes, are left alone."""
    ov_mod = pytest.importorskip("openvino")
    from onnx import TensorProto, helper

    from sami_rt.backends.openvino import pool_spatial_means

    rng = np.random.default_rng(fresh_seed)
    B, C, H, W = 3, 8, 6, 5
    ax = lambda name, v: helper.make_node("Constant", [], [name], value=helper.make_tensor(  # noqa: E731
        name, TensorProto.INT64, [len(v)], v))
    nodes = [ax("hw", [2, 3]), ax("wh", [-1, -2]), ax("c", [1]),
             helper.make_node("ReduceMean", ["x", "hw"], ["m"], keepdims=1),
             helper.make_node("Sub", ["x", "m"], ["d"]),
             helper.make_node("Mul", ["d", "d"], ["dd"]),
             helper.make_node("ReduceMean", ["dd", "wh"], ["v"], keepdims=1),
             helper.make_node("ReduceMean", ["x", "c"], ["mc"], keepdims=1),
             helper.make_node("ReduceMean", ["x", "hw"], ["flat"], keepdims=0)]
    io = lambda n, s: helper.make_tensor_value_info(n, TensorProto.FLOAT, s)  # noqa: E731
    outputs = [io("v", None), io("mc", None), io("flat", None)]
    graph = helper.make_graph(nodes, "means", [io("x", [B, C, H, W])], outputs)
    m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    feed = {"x": (rng.standard_normal((B, C, H, W)) * 3 + rng.standard_normal((1, C, 1, 1)) * 5).astype(np.float32)}
    model = ov_mod.Core().read_model(m.SerializeToString(), b"")
    assert pool_spatial_means(model) == 2 and pool_spatial_means(model) == 0
    types = [op.get_type_name() for op in model.get_ordered_ops()]
    assert types.count("AvgPool") == 2 and types.count("ReduceMean") == 2
    _agrees_with_onnxruntime(ov_mod, model, m, feed)
