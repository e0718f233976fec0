"""Export: every graph against its PyTorch twin in onnxruntime, both encoder families, the bundle reader."""

import json
import shutil

import numpy as np
import pytest
import torch

pytest.importorskip("onnxruntime")
pytest.importorskip("onnxscript")

from export.core import ExportError, export_bundle, load_model, reference, run_onnx  # noqa: E402
from sami_rt.bundle import FORMAT_VERSION, MANIFEST, BundleError, read_bundle  # noqa: E402
from tests.conftest import tiny_config  # noqa: E402
from train.loop import Trainer  # noqa: E402

FAMILIES = {
    "convnet-unet": dict(),
    "convnet-silu": dict(enc_act="silu", enc_hidden=16, enc_bias=True),
    "halfunet-attention": dict(encoder="half-unet", enc_unet_channels=8, enc_mult=(1, 2), enc_res_blocks=1,
                               enc_attention=(8,), enc_bias=True, unet_attention=(8,), latent_dim=4,
                               sampling_scale=2.5),
}


@pytest.fixture(scope="module")
def bundles(tmp_path_factory):
    out = {}
    for name, kw in FAMILIES.items():
        d = tmp_path_factory.mktemp(name)
        Trainer(tiny_config(steps=2, **kw), d / "run").run()
        export_bundle(d / "run", d / "bundle", fp16=True, log=lambda s: None)
        out[name] = d
    return out


@pytest.mark.parametrize("family", list(FAMILIES))
@pytest.mark.parametrize("graph", ["encoder", "denoiser", "guidance", "guided_eps"])
def test_graph_matches_pytorch_on_fresh_inputs_at_any_batch(bundles, family, graph):
    d = bundles[family]
    model, cfg, abar, _ = load_model(d / "run")
    b = read_bundle(d / "bundle")
    g = torch.Generator().manual_seed(int(torch.randint(2**31, (1,))))
    C, S, D = cfg.channels, cfg.image_size, cfg.latent_dim
    for B in (1, 3, 17):
        inp = {"x": torch.rand(B, C, S, S, generator=g) * 2 - 1, "x_t": torch.randn(B, C, S, S, generator=g),
               "t": torch.randint(cfg.T, (B,), generator=g), "z": 3 * torch.randn(B, D, generator=g),
               "mask": (torch.rand(B, D, generator=g) > 0.5).float(), "scale": torch.rand(B, generator=g) * 2}
        names = [s["name"] for s in b.graphs[graph].inputs]
        inp = {k: inp[k] for k in names}
        want = reference(graph, model, abar, inp)  # guidance: torch.autograd.grad of the masked log-likelihood
        got = run_onnx(b.graphs[graph].path, inp)
        for w, o in zip(want, got):
            w = w.detach().numpy()
            assert o.shape == w.shape
            assert np.abs(o - w).max() <= 1e-4 * np.abs(w).max(), (graph, B)


@pytest.mark.parametrize("family", list(FAMILIES))
def test_fp16_graphs_match_the_float32_graphs(bundles, family):
    from export.core import FP16_TOLERANCE

    b = read_bundle(bundles[family] / "bundle")
    _, cfg, _, _ = load_model(bundles[family] / "run")
    assert set(b.graphs_fp16) == set(b.graphs) and all(g.precision == "float16" for g in b.graphs_fp16.values())
    g = torch.Generator().manual_seed(int(torch.randint(2**31, (1,))))
    for name in b.graphs:
        inp = {"x": torch.rand(5, 1, 16, 16, generator=g) * 2 - 1, "x_t": torch.randn(5, 1, 16, 16, generator=g),
               "t": torch.randint(cfg.T, (5,), generator=g), "z": torch.randn(5, cfg.latent_dim, generator=g),
               "mask": torch.ones(5, cfg.latent_dim), "scale": torch.ones(5)}
        inp = {s["name"]: inp[s["name"]] for s in b.graphs[name].inputs}
        for lo, hi in zip(run_onnx(b.graphs_fp16[name].path, inp), run_onnx(b.graphs[name].path, inp)):
            assert lo.dtype == np.float32  # float32 inputs and outputs around a float16 body
            assert np.abs(lo - hi).max() <= FP16_TOLERANCE * np.abs(hi).max(), name


@pytest.mark.parametrize("family", ["convnet-unet", "halfunet-attention"])
def test_round_trip_checkpoint_to_bundle_reader(bundles, family):
    d = bundles[family]
    ck = torch.load(d / "run" / "checkpoint.pt", weights_only=True)
    b = read_bundle(d / "bundle")
    assert b.image_shape == (1, 16, 16) and b.latent_dim == ck["config"]["latent_dim"] and b.T == 50
    np.testing.assert_array_equal(b.abar, ck["abar"].numpy())
    assert set(b.graphs) == {"encoder", "denoiser", "guidance", "guided_eps"}
    from train.config import Config

    assert Config.from_dict(b.manifest["training"]["config"]) == Config.from_dict(ck["config"])
    assert b.default_scale == ck["config"]["sampling_scale"] == b.manifest["sampling"]["scale"]
    assert b.default_scale == (2.5 if family == "halfunet-attention" else 1.0)
    errs = b.manifest["export"]["validation"]["relative_error"]
    assert set(errs["guidance"]) == {"1", "3", "17"} and max(errs["guidance"].values()) < 1e-4


@pytest.mark.parametrize("family", list(FAMILIES))
def test_reference_weights_rebuild_the_model_in_pytorch(bundles, family):
    """`sami-rt bench`'s baseline: the bundle alone (no run directory) rebuilds the exported model."""
    from sami_rt.backends.onnxruntime import OrtBackend
    from sami_reference import load_reference
    from sami_reference.guidance import guided_eps

    b = read_bundle(bundles[family] / "bundle")
    model, abar = load_reference(b)
    want_model, _, _, _ = load_model(bundles[family] / "run")
    for (k, v), (k2, w) in zip(model.state_dict().items(), want_model.state_dict().items()):
        assert k == k2 and torch.equal(v, w), k
    be = OrtBackend(b, "cpu")
    rng = np.random.default_rng()
    B, D = 5, b.latent_dim
    x = rng.standard_normal((B, *b.image_shape)).astype(np.float32)
    t = rng.integers(0, b.T, B)
    z = rng.standard_normal((B, D)).astype(np.float32)
    mask = (rng.random((B, D)) > 0.3).astype(np.float32)
    scale = rng.uniform(0.5, 2, B).astype(np.float32)
    tt = torch.from_numpy(t)
    want = guided_eps(model.denoiser, model.encoder, torch.from_numpy(x), tt, torch.from_numpy(z),
                      torch.sqrt(1 - abar[tt]).float(), torch.from_numpy(scale), torch.from_numpy(mask)).numpy()
    got = be.guided_eps(x, t, z, mask, scale)
    assert np.abs(got - want).max() <= 1e-4 * np.abs(want).max()
    flops = b.manifest["flops"]
    assert flops["guided_eps"] > flops["denoiser"] > flops["guidance"] > flops["encoder"] > 0


def test_reference_weights_are_checked(bundles, tmp_path):
    from sami_reference import load_reference

    dst, m = _copy(bundles, tmp_path)
    _flip_byte(dst / "reference.npz", 200)
    with pytest.raises(BundleError, match="checksum mismatch for reference.npz"):
        read_bundle(dst)
    del m["reference"]
    _write(dst, m)
    with pytest.raises(BundleError, match="has no reference weights"):
        load_reference(read_bundle(dst))


def _copy(bundles, tmp_path):
    dst = tmp_path / "b"
    shutil.copytree(bundles["convnet-unet"] / "bundle", dst)
    return dst, json.loads((dst / MANIFEST).read_text())


def _flip_byte(path, offset: int) -> None:
    """Corrupt one byte of a file in place (a checksum must notice)."""
    with open(path, "r+b") as fh:
        fh.seek(offset)
        byte = fh.read(1)
        fh.seek(offset)
        fh.write(bytes([byte[0] ^ 0xFF]))


def _write(dst, m):
    (dst / MANIFEST).write_text(json.dumps(m))


def test_reader_refuses_an_unknown_version(bundles, tmp_path):
    dst, m = _copy(bundles, tmp_path)
    m["format_version"] = FORMAT_VERSION + 1
    _write(dst, m)
    with pytest.raises(BundleError, match=f"format version {FORMAT_VERSION + 1} is not supported"):
        read_bundle(dst)


def test_reader_refuses_a_missing_graph_file(bundles, tmp_path):
    dst, _ = _copy(bundles, tmp_path)
    (dst / "guidance.onnx").unlink()
    with pytest.raises(BundleError, match="graph 'guidance': file guidance.onnx is missing"):
        read_bundle(dst)


def test_reader_refuses_a_checksum_mismatch(bundles, tmp_path):
    dst, _ = _copy(bundles, tmp_path)
    _flip_byte(dst / "encoder.onnx", 100)
    with pytest.raises(BundleError, match="checksum mismatch for encoder.onnx"):
        read_bundle(dst)


@pytest.mark.parametrize("name", ["../outside.onnx", "/etc/passwd", "sub/../../x.onnx"])
def test_reader_refuses_a_file_outside_the_bundle(bundles, tmp_path, name):
    dst, m = _copy(bundles, tmp_path)
    (tmp_path / "outside.onnx").write_bytes((dst / "encoder.onnx").read_bytes())
    m["graphs"]["encoder"]["file"] = name
    _write(dst, m)
    with pytest.raises(BundleError, match="points outside the bundle directory"):
        read_bundle(dst)


def test_reader_refuses_malformed_manifests(bundles, tmp_path):
    dst, m = _copy(bundles, tmp_path)
    (dst / MANIFEST).write_text("{not json")
    with pytest.raises(BundleError, match="is not valid JSON"):
        read_bundle(dst)
    (dst / MANIFEST).unlink()
    with pytest.raises(BundleError, match="manifest.json is missing"):
        read_bundle(dst)
    m2 = dict(m, graphs=dict(m["graphs"]))
    m2["graphs"]["denoiser"] = dict(m["graphs"]["denoiser"], outputs=[{"name": "noise", "shape": ["batch", 1, 16, 16]}])
    _write(dst, m2)
    with pytest.raises(BundleError, match="differ from the contract"):
        read_bundle(dst)
    abar = list(m["schedule"]["abar"])
    for bad in ([abar[7], 0.5], 10**400):  # nested (found by the fuzz test), beyond a float: numpy's own errors once
        abar[7] = bad
        _write(dst, dict(m, schedule=dict(m["schedule"], abar=abar)))
        with pytest.raises(BundleError, match="schedule.abar must be a list of numbers"):
            read_bundle(dst)


@pytest.mark.parametrize("sampling,msg", [
    ({"scale": 0}, "sampling.scale must be a positive number, got 0"),
    ({"scale": -2.0}, "sampling.scale must be a positive number, got -2.0"),
    ({"scale": "3"}, "sampling.scale must be a positive number, got '3'"),
    ({"scale": True}, "sampling.scale must be a positive number, got True"),
    ({"scale": 10**400}, "sampling.scale must be a positive number"),  # JSON allows it; a float does not
    ([3.0], "field 'sampling' should be an object"),
])
def test_reader_refuses_a_bad_sampling_scale(bundles, tmp_path, sampling, msg):
    dst, m = _copy(bundles, tmp_path)
    _write(dst, dict(m, sampling=sampling))
    with pytest.raises(BundleError, match=msg):
        read_bundle(dst)


def test_reader_takes_the_sampling_scale_and_defaults_to_the_exact_model(bundles, tmp_path):
    dst, m = _copy(bundles, tmp_path)
    s = float(np.random.default_rng().uniform(0.5, 4.0))
    _write(dst, dict(m, sampling={"scale": s}))
    assert read_bundle(dst).default_scale == s
    _write(dst, {k: v for k, v in m.items() if k != "sampling"})  # bundles written before the field: the exact model
    assert read_bundle(dst).default_scale == 1.0


def test_missing_checkpoint_is_named(tmp_path):
    with pytest.raises(ExportError, match="no checkpoint at"):
        export_bundle(tmp_path, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_tensorrt_without_a_gpu_is_one_sentence(bundles, tmp_path):
    import subprocess
    import sys
    from pathlib import Path

    if torch.cuda.is_available():
        pytest.skip("a CUDA device is present: the gpu-marked test builds real engines")
    root = Path(__file__).resolve().parent.parent
    r = subprocess.run([sys.executable, str(root / "export" / "run.py"), str(bundles["convnet-unet"] / "run"),
                        "-o", str(tmp_path / "b"), "--tensorrt"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 1
    assert r.stderr.strip().count("\n") == 0 and "needs an NVIDIA GPU with CUDA" in r.stderr
    assert not (tmp_path / "b").exists()


@pytest.mark.gpu
def test_tensorrt_engines_match_onnxruntime(bundles, tmp_path):
    trt = pytest.importorskip("tensorrt")
    export_bundle(bundles["convnet-unet"] / "run", tmp_path / "b", fp16=True, tensorrt=True, log=lambda s: None)
    b = read_bundle(tmp_path / "b")
    assert {"encoder", "guided_eps", "guided_eps.fp16"} <= set(b.engines)
    _, cfg, _, _ = load_model(bundles["convnet-unet"] / "run")
    runtime = trt.Runtime(trt.Logger(trt.Logger.WARNING))
    g = torch.Generator().manual_seed(int(torch.randint(2**31, (1,))))
    for key in ("guided_eps", "guided_eps.fp16"):
        info = b.engines[key]
        assert info.tensorrt == trt.__version__ and info.gpu == torch.cuda.get_device_name(0)
        engine = runtime.deserialize_cuda_engine(info.path.read_bytes())
        ctx = engine.create_execution_context()
        B = 5
        inp = {"x_t": torch.randn(B, 1, 16, 16, generator=g), "t": torch.randint(cfg.T, (B,), generator=g),
               "z": torch.randn(B, cfg.latent_dim, generator=g), "mask": torch.ones(B, cfg.latent_dim),
               "scale": torch.ones(B)}
        dev = {k: v.cuda().contiguous() for k, v in inp.items()}
        out = torch.empty(B, 1, 16, 16, device="cuda")
        for k, v in dev.items():
            ctx.set_input_shape(k, tuple(v.shape))
            ctx.set_tensor_address(k, v.data_ptr())
        ctx.set_tensor_address("eps_hat", out.data_ptr())
        stream = torch.cuda.Stream()
        assert ctx.execute_async_v3(stream.cuda_stream)
        stream.synchronize()
        want = run_onnx(b.graphs["guided_eps"].path, inp)[0]
        tol = 2e-2 if key.endswith("fp16") else 1e-3
        assert np.abs(out.cpu().numpy() - want).max() <= tol * np.abs(want).max()


def _fresh_loop_inputs(b, B, rng):
    D = b.latent_dim
    return (rng.standard_normal((B, *b.image_shape)).astype(np.float32), rng.integers(0, b.T, B),
            rng.standard_normal((B, D)).astype(np.float32), (rng.random((B, D)) > 0.3).astype(np.float32),
            rng.uniform(0.5, 2, B).astype(np.float32))


@pytest.mark.gpu
def test_native_tensorrt_backend_matches_the_cpu_backend(bundles, tmp_path):
    """The runtime's TrtBackend (engines, device buffers, CUDA graph replay) against onnxruntime on the CPU,
    on fresh inputs at every call: a replayed graph must read the new inputs, not the captured ones."""
    pytest.importorskip("tensorrt")
    pytest.importorskip("cuda")
    from sami_rt.backends import open_backend
    from sami_rt.backends.onnxruntime import OrtBackend
    from sami_rt.backends.tensorrt import TrtBackend

    export_bundle(bundles["halfunet-attention"] / "run", tmp_path / "b", fp16=True, tensorrt=True, log=lambda s: None)
    b = read_bundle(tmp_path / "b")
    cpu = OrtBackend(b, "cpu")
    rng = np.random.default_rng()
    for precision, tol in (("float32", 1e-3), ("auto", 2e-2)):
        be = open_backend(b, "tensorrt", precision=precision)
        assert isinstance(be, TrtBackend), be.notes
        assert be.precision == ("float16" if precision == "auto" else "float32")
        for B in list(range(1, 11)) + [5, 300]:  # > 8 sizes: contexts are evicted and rebuilt; 300 is split
            args = _fresh_loop_inputs(b, B, rng)
            want = cpu.guided_eps(*args)
            assert np.abs(be.guided_eps(*args) - want).max() <= tol * np.abs(want).max(), (precision, B)
            want = cpu.denoise(args[0], args[1])
            assert np.abs(be.denoise(args[0], args[1]) - want).max() <= tol * np.abs(want).max(), (precision, B)
            x = rng.uniform(-1, 1, (B, *b.image_shape)).astype(np.float32)
            for got, w in zip(be.encode(x), cpu.encode(x)):
                assert np.abs(got - w).max() <= tol * np.abs(w).max()
        assert all(ctx.graph is not None for ctx in be._contexts.values()), be.notes  # graphs were captured


@pytest.mark.gpu
def test_cuda_backend_with_cuda_graphs_matches_the_cpu_backend(bundles):
    ort = pytest.importorskip("onnxruntime")
    if "CUDAExecutionProvider" not in ort.get_available_providers():
        pytest.skip("onnxruntime here has no CUDA provider (install onnxruntime-gpu)")
    from sami_rt.backends.onnxruntime import OrtBackend

    b = read_bundle(bundles["convnet-unet"] / "bundle")
    cpu = OrtBackend(b, "cpu")
    rng = np.random.default_rng()
    for precision, tol in (("float32", 1e-3), ("float16", 2e-2)):
        be = OrtBackend(b, "cuda", precision=precision)
        assert be._captured == {"guided_eps", "denoiser"}, be.notes  # CUDA graphs are on
        # replays at each size must see the new inputs; more than MAX_CAPTURED sizes run uncaptured
        for B in [1, 4, 4, 4, 1] + list(range(5, 15)) + [2]:
            args = _fresh_loop_inputs(b, B, rng)
            want = cpu.guided_eps(*args)
            assert np.abs(be.guided_eps(*args) - want).max() <= tol * np.abs(want).max(), (precision, B, be.notes)
            t32 = args[1].astype(np.int32)  # another integer type must be converted, not reinterpreted
            want = cpu.denoise(args[0], args[1])
            assert np.abs(be.denoise(args[0], t32) - want).max() <= tol * np.abs(want).max()
        assert be._captured == {"guided_eps", "denoiser"}, be.notes
