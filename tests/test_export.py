"""Export: every graph against its PyTorch twin in onnxruntime, both encoder families, the reference weights.

The reader's refusals of corrupted bundles are tested on the shipped bundle (test_bundle.py), without an export."""

import shutil

import numpy as np
import pytest
import torch

pytest.importorskip("onnxruntime")
pytest.importorskip("onnxscript")

from export.core import ExportError, export_bundle, load_model, reference, run_onnx  # noqa: E402
from sami_rt.contract.bundle import read_bundle  # noqa: E402
from sami_rt.contract.format import GRAPHS  # noqa: E402
from tests.conftest import tiny_config  # noqa: E402
from train.loop import Trainer  # noqa: E402

FAMILIES = {
    # SiLU and the spatial-softmax pooling (beyond the paper) in one export; the paper's flattened ReLU ConvNet is
    # exported in test_frozen.py
    "convnet-silu": dict(enc_act="silu", enc_hidden=16, enc_bias=True, enc_pool="spatial-softmax"),
    # one resolution level: attention at 16x16 in both networks (the ConvNet family's UNet has the two levels)
    "halfunet-attention": dict(encoder="half-unet", enc_unet_channels=8, enc_mult=(1,), enc_res_blocks=1,
                               enc_attention=(16,), enc_bias=True, unet_mult=(1,), unet_attention=(16,),
                               latent_dim=4, sampling_scale=2.5),
}
# Families exported with --fp16 as well (the exports are most of this module's time): the half-UNet, whose
# bundle holds a float16 encoder trunk and a float16 UNet with attention. A ConvNet encoder has no float16 trunk
# (ConvEncoder.trunk_modules() is empty): test_a_convnet_model_in_float16_keeps_its_encoder_float32 checks that
# part in PyTorch without a second export. The default ConvNet (ReLU, no biases) is exported and validated
# against PyTorch at batches 1, 3 and 17 in test_frozen.py.
FP16 = ("halfunet-attention",)
SAMPLING_STEPS = {"halfunet-attention": 7}
SAMPLING_SCALE = {"convnet-silu": 4.5}  # export/run.py --sampling-scale: replaces the run's (1) in the bundle


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Run directories of the families, trained two steps each (a second or two)."""
    out = {}
    for name, kw in FAMILIES.items():
        d = tmp_path_factory.mktemp(name)
        Trainer(tiny_config(steps=2, **kw), d / "run").run()
        out[name] = d
    return out


@pytest.fixture(scope="module")
def bundles(runs):
    """``runs`` with each exported to ``DIR/bundle`` (minutes: the ONNX exports); the half-UNet's records a
    default DDPM step count (export/run.py --sampling-steps)."""
    import logging
    import warnings

    class Keep(logging.Handler):
        def emit(self, record):
            EXPORT_SAID["logged"].append(f"{record.name}: {record.getMessage()}")

    handler = Keep(logging.WARNING)
    logging.getLogger().addHandler(handler)
    try:
        for name, d in runs.items():
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                export_bundle(d / "run", d / "bundle", fp16=name in FP16, log=EXPORT_SAID["lines"].append,
                              sampling_steps=SAMPLING_STEPS.get(name), sampling_scale=SAMPLING_SCALE.get(name))
            EXPORT_SAID["warnings"] += [f"{w.category.__name__}: {w.message}" for w in caught]
    finally:
        logging.getLogger().removeHandler(handler)
    return runs


EXPORT_SAID = {"lines": [], "warnings": [], "logged": []}  # what the exports printed, warned and logged


def test_the_export_says_its_lines_and_nothing_else(bundles):
    """export/run.py's output is its own lines (one per graph, the variance range): the exporter's warnings
    (training-mode export, merged axis names, pytree deprecations) and torchvision notes are kept out."""
    assert EXPORT_SAID["warnings"] == [] and EXPORT_SAID["logged"] == [], (EXPORT_SAID["warnings"], EXPORT_SAID["logged"])
    graphs = sum(1 for ln in EXPORT_SAID["lines"] if "MB in" in ln)
    assert graphs == 4 * len(FAMILIES) + 4 * len(FP16)  # float32 graphs of each family, float16 of FP16's
    assert all(ln.startswith("  ") for ln in EXPORT_SAID["lines"])


@pytest.mark.parametrize("family", list(FAMILIES))
@pytest.mark.parametrize("graph", ["encoder", "denoiser", "guidance", "guided_eps"])
def test_graph_matches_pytorch_on_fresh_inputs_at_any_batch(bundles, family, graph, fresh_seed):
    d = bundles[family]
    model, cfg, abar, _ = load_model(d / "run")
    b = read_bundle(d / "bundle")
    g = torch.Generator().manual_seed(fresh_seed)
    C, S, D = cfg.channels, cfg.image_size, cfg.latent_dim
    for B in (1, 3, 17):
        inp = {"x": torch.rand(B, C, S, S, generator=g) * 2 - 1, "x_t": torch.randn(B, C, S, S, generator=g),
               "t": torch.randint(cfg.T, (B,), generator=g), "z": 3 * torch.randn(B, D, generator=g),
               "mask": (torch.rand(B, D, generator=g) > 0.5).float(), "scale": torch.rand(B, generator=g) * 2}
        names = [s["name"] for s in b.graphs[graph].inputs]
        inp = {k: inp[k] for k in names}
        want = reference(graph, model, abar, inp)  # guidance: torch.autograd.grad of the masked log-likelihood
        got = run_onnx(b.path(b.graphs[graph]), inp)
        for w, o in zip(want, got):
            w = w.detach().numpy()
            assert o.shape == w.shape
            assert np.abs(o - w).max() <= 1e-4 * np.abs(w).max(), (graph, B)


@pytest.mark.parametrize("family", list(FAMILIES))
def test_a_row_of_every_graph_does_not_depend_on_the_batch_it_is_in(bundles, family, fresh_seed):
    """onnxruntime, as the runtime opens it: each row of a batch-17 call equals, to the bit, the same row in
    calls of batch 1..16. A latent size of 3 (convnet-silu) leaves a partial vector of the variance's softplus at
    the end of most batches, which onnxruntime computes with scalar code: without the export's padding
    (nets._var) rows of those calls differ in their last bits (this test failed so), and a guidance scale of 50
    amplified that to 1.4e-3 over 20 sampling steps on disks-3d."""
    d = bundles[family]
    _, cfg, _, _ = load_model(d / "run")
    b = read_bundle(d / "bundle")
    g = torch.Generator().manual_seed(fresh_seed)
    C, S, D, B = cfg.channels, cfg.image_size, cfg.latent_dim, 17
    inp = {"x": torch.rand(B, C, S, S, generator=g) * 2 - 1, "x_t": torch.randn(B, C, S, S, generator=g),
           "t": torch.randint(cfg.T, (B,), generator=g), "z": 3 * torch.randn(B, D, generator=g),
           "mask": (torch.rand(B, D, generator=g) > 0.5).float(), "scale": 1 + torch.rand(B, generator=g) * 60}
    for graph in ("encoder", "guidance", "guided_eps"):
        feed = {s["name"]: inp[s["name"]] for s in b.graphs[graph].inputs}
        whole = run_onnx(b.path(b.graphs[graph]), feed)
        for n in range(1, B):
            part = run_onnx(b.path(b.graphs[graph]), {k: v[:n] for k, v in feed.items()})
            for p, w in zip(part, whole):
                assert np.array_equal(p, w[:n]), (graph, n)


@pytest.mark.parametrize("family", list(FAMILIES))
def test_each_weight_is_written_once_and_openvino_unshares_it_at_load(bundles, family, fresh_seed, tmp_path,
                                                                     monkeypatch):
    """The guidance reads each encoder weight twice (the forward op and its input gradient) from one initializer
    (the bundle holds it once); OpenVINO 2026.4.1 miscomputes such a shared square weight, and the OpenVINO
    backend gives each reader its own copy at load (backends/openvino.py, unshare_constants), so that the
    bundle passes the backend's check against onnxruntime and guided_eps agrees at a fresh batch."""
    import collections

    import onnx

    from sami_rt.backends import open_backend

    b = read_bundle(bundles[family] / "bundle")
    g = onnx.load(str(b.path(b.graphs["guidance"]))).graph
    weights = {i.name for i in g.initializer if len(i.dims) >= 2}
    uses = collections.Counter(x for n in g.node for x in n.input if x in weights)
    assert max(uses.values()) >= 2, uses.most_common(3)
    pytest.importorskip("openvino")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))  # the check's record of bundles checked
    ov = open_backend(b, "openvino", 1, "f32")  # checks the bundle against onnxruntime, refusing a wrong graph
    rng = np.random.default_rng(fresh_seed)
    f = GRAPHS["guided_eps"].example_inputs(rng, int(rng.integers(2, 7)), b.manifest.dims, b.manifest.T)
    want = open_backend(b, "cpu", 1, "f32").guided_eps(**f)
    assert np.abs(ov.guided_eps(**f) - want).max() <= 1e-4 * np.abs(want).max()


@pytest.mark.parametrize("family", FP16)
def test_fp16_graphs_match_the_float32_graphs(bundles, family, fresh_seed):
    from export.core import FP16_TOLERANCE

    b = read_bundle(bundles[family] / "bundle")
    _, cfg, _, _ = load_model(bundles[family] / "run")
    assert set(b.graphs_fp16) == set(b.graphs) and all(g.precision == "float16" for g in b.graphs_fp16.values())
    g = torch.Generator().manual_seed(fresh_seed)
    for name in b.graphs:
        inp = {"x": torch.rand(5, 1, 16, 16, generator=g) * 2 - 1, "x_t": torch.randn(5, 1, 16, 16, generator=g),
               "t": torch.randint(cfg.T, (5,), generator=g), "z": torch.randn(5, cfg.latent_dim, generator=g),
               "mask": torch.ones(5, cfg.latent_dim), "scale": torch.ones(5)}
        inp = {s["name"]: inp[s["name"]] for s in b.graphs[name].inputs}
        for lo, hi in zip(run_onnx(b.path(b.graphs_fp16[name]), inp), run_onnx(b.path(b.graphs[name]), inp)):
            assert lo.dtype == np.float32  # float32 inputs and outputs around a float16 body
            assert np.abs(lo - hi).max() <= FP16_TOLERANCE * np.abs(hi).max(), name


def test_fp16_graphs_only_when_asked(bundles):
    d = next(bundles[f] for f in FAMILIES if f not in FP16) / "bundle"
    assert read_bundle(d).graphs_fp16 == {} and not list(d.glob("*.fp16.onnx"))


def test_a_convnet_model_in_float16_keeps_its_encoder_float32(runs, fresh_seed):
    """What --fp16 makes of a ConvNet model, in PyTorch: the encoder (and so the guidance) stays float32
    and exact; the UNet without attention runs in float16 within the export's float16 tolerance."""
    from export.core import FP16_TOLERANCE
    from export.graphs import prepare_denoiser, prepare_encoder

    model, cfg, _, _ = load_model(runs["convnet-silu"] / "run")
    g = torch.Generator().manual_seed(fresh_seed)
    x = torch.rand(5, 1, 16, 16, generator=g) * 2 - 1
    enc16, enc32 = prepare_encoder(model.encoder, "float16"), prepare_encoder(model.encoder, "float32")
    assert all(p.dtype == torch.float32 for p in enc16.parameters())
    with torch.no_grad():
        for lo, hi, train in zip(enc16(x), enc32(x), model.encoder(x)):
            assert torch.equal(lo, hi)  # the float32 export's encoder, to the bit
            # and the training form within rounding (the export pads the variance's columns: nets._var)
            assert torch.allclose(lo, train, rtol=1e-6, atol=0)
        t = torch.randint(cfg.T, (5,), generator=g)
        lo, hi = prepare_denoiser(model.denoiser, "float16")(x, t), model.denoiser(x, t)
    assert lo.dtype == torch.float32 and 0 < (lo - hi).abs().max() <= FP16_TOLERANCE * hi.abs().max()


@pytest.mark.parametrize("family", list(FAMILIES))
def test_round_trip_checkpoint_to_bundle_reader(bundles, family):
    d = bundles[family]
    ck = torch.load(d / "run" / "checkpoint.pt", weights_only=True)
    b = read_bundle(d / "bundle")
    assert b.manifest.image.shape == (1, 16, 16) and b.manifest.latent_dim == ck["config"]["latent_dim"] and b.manifest.T == 50
    np.testing.assert_array_equal(b.manifest.abar, ck["abar"].numpy())
    assert set(b.graphs) == {"encoder", "denoiser", "guidance", "guided_eps"}
    from train.config import Config

    trained = Config.from_dict(ck["config"])
    assert Config.from_dict(b.manifest.training["config"]) == trained.replace(
        sampling_scale=SAMPLING_SCALE.get(family, trained.sampling_scale))
    assert ck["config"]["sampling_scale"] == (2.5 if family == "halfunet-attention" else 1.0)
    assert b.manifest.sampling_scale == SAMPLING_SCALE.get(family, ck["config"]["sampling_scale"])
    assert b.manifest.training["config"]["sampling_scale"] == b.manifest.sampling_scale
    assert b.manifest.sampling_steps == SAMPLING_STEPS.get(family)  # None: the runtime's 100 (T = 50 here: 50)
    errs = b.manifest.export["validation"]["relative_error"]
    assert set(errs["guidance"]) == {"1", "3", "17"} and max(errs["guidance"].values()) < 1e-4


@pytest.mark.parametrize("family", list(FAMILIES))
def test_reference_weights_rebuild_the_model_in_pytorch(bundles, family, fresh_seed):
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
    rng = np.random.default_rng(fresh_seed)
    B, D = 5, b.manifest.latent_dim
    x = rng.standard_normal((B, *b.manifest.image.shape)).astype(np.float32)
    t = rng.integers(0, b.manifest.T, B)
    z = rng.standard_normal((B, D)).astype(np.float32)
    mask = (rng.random((B, D)) > 0.3).astype(np.float32)
    scale = rng.uniform(0.5, 2, B).astype(np.float32)
    tt = torch.from_numpy(t)
    want = guided_eps(model.denoiser, model.encoder, torch.from_numpy(x), tt, torch.from_numpy(z),
                      torch.sqrt(1 - abar[tt]).float(), torch.from_numpy(scale), torch.from_numpy(mask)).numpy()
    got = be.guided_eps(x, t, z, mask, scale)
    assert np.abs(got - want).max() <= 1e-4 * np.abs(want).max()
    flops = b.manifest.flops
    # guided_eps runs the denoiser and the guidance; the guidance, the encoder forward and backward
    assert flops["guided_eps"] > max(flops["denoiser"], flops["guidance"]) and flops["guidance"] > flops["encoder"] > 0


def test_a_bundle_exports_again_from_its_reference_weights(bundles, tmp_path, fresh_seed):
    """export/run.py BUNDLE -o BUNDLE: the bundle's reference weights exported again onto itself give the same
    graphs' outputs; what its manifest records beyond the graphs is carried over (here a description, scale and
    interval set by export/annotate.py, its float16 graphs, its export record) unless given (the step count)."""
    from export.annotate import annotate

    d, orig = tmp_path / "bundle", tmp_path / "as-it-was"
    shutil.copytree(bundles["halfunet-attention"] / "bundle", d)
    assert annotate(d, log=lambda s: None, sampling_scale=1.7, sampling_interval=(0.2, 1.0), description="annotated")
    shutil.copytree(d, orig)
    pytest.raises(ExportError, export_bundle, d, tmp_path / "refused", ema=False).match("only the weights it was")
    src, again = read_bundle(orig), read_bundle(export_bundle(d, d, sampling_steps=9, log=lambda s: None))
    m, m0, rng = again.manifest, src.manifest, np.random.default_rng(fresh_seed)
    assert (m0.sampling_steps, m.sampling_steps) == (SAMPLING_STEPS["halfunet-attention"], 9)
    assert (m.description, m.sampling_scale, tuple(m.sampling_interval)) == ("annotated", 1.7, (0.2, 1.0))
    for f in ("description", "sampling_scale", "sampling_interval", "evaluation", "training", "architecture",
              "variance_range", "image", "latent_dim", "flops"):
        assert getattr(m, f) == getattr(m0, f), f
    assert m.export["source"]["previous"] == m0.export and "annotated" in m0.export
    assert np.array_equal(m.abar, m0.abar) and sorted(m.graphs_fp16) == sorted(m0.graphs_fp16) == sorted(m0.graphs)
    for name in m.graphs:
        feed = {k: torch.from_numpy(v) for k, v in GRAPHS[name].example_inputs(rng, 3, m.dims, m.T).items()}
        got, want = run_onnx(again.path(again.graphs[name]), feed), run_onnx(src.path(src.graphs[name]), feed)
        assert all(np.abs(g - w).max() <= 1e-5 * np.abs(w).max() for g, w in zip(got, want)), name


def test_a_step_count_beyond_the_models_T_is_refused_before_the_export(runs, tmp_path):
    with pytest.raises(ExportError, match="--sampling-steps must be from 1 to the model's T=50, got 51"):
        export_bundle(runs["convnet-silu"] / "run", tmp_path / "b", sampling_steps=51, log=lambda s: None)
    with pytest.raises(ExportError, match="--sampling-scale must be above 0 and at most 1000, got 0"):
        export_bundle(runs["convnet-silu"] / "run", tmp_path / "b", sampling_scale=0.0, log=lambda s: None)
    assert not (tmp_path / "b").exists()


def test_missing_checkpoint_is_named(tmp_path):
    with pytest.raises(ExportError, match="no checkpoint at"):
        export_bundle(tmp_path, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_tensorrt_without_a_gpu_is_one_sentence(runs, tmp_path):
    import subprocess
    import sys
    from pathlib import Path

    if torch.cuda.is_available():
        pytest.skip("a CUDA device is present: the gpu-marked test builds real engines")
    root = Path(__file__).resolve().parent.parent
    r = subprocess.run([sys.executable, str(root / "export" / "run.py"), str(runs["convnet-silu"] / "run"),
                        "-o", str(tmp_path / "b"), "--tensorrt"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 1
    assert r.stderr.strip().count("\n") == 0 and "needs an NVIDIA GPU with CUDA" in r.stderr
    assert not (tmp_path / "b").exists()


@pytest.mark.gpu
def test_tensorrt_engines_match_onnxruntime(runs, tmp_path, fresh_seed):
    trt = pytest.importorskip("tensorrt")
    export_bundle(runs["convnet-silu"] / "run", tmp_path / "b", fp16=True, tensorrt=True, log=lambda s: None)
    b = read_bundle(tmp_path / "b")
    assert {"encoder", "guided_eps", "guided_eps.fp16"} <= set(b.engines)
    _, cfg, _, _ = load_model(runs["convnet-silu"] / "run")
    runtime = trt.Runtime(trt.Logger(trt.Logger.WARNING))
    g = torch.Generator().manual_seed(fresh_seed)
    for key in ("guided_eps", "guided_eps.fp16"):
        info = b.engines[key]
        assert info.tensorrt == trt.__version__ and info.gpu == torch.cuda.get_device_name(0)
        engine = runtime.deserialize_cuda_engine(b.path(info).read_bytes())
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
        want = run_onnx(b.path(b.graphs["guided_eps"]), inp)[0]
        tol = 2e-2 if key.endswith("fp16") else 1e-3
        assert np.abs(out.cpu().numpy() - want).max() <= tol * np.abs(want).max()


def _fresh_loop_inputs(b, B, rng):
    D = b.manifest.latent_dim
    return (rng.standard_normal((B, *b.manifest.image.shape)).astype(np.float32), rng.integers(0, b.manifest.T, B),
            rng.standard_normal((B, D)).astype(np.float32), (rng.random((B, D)) > 0.3).astype(np.float32),
            rng.uniform(0.5, 2, B).astype(np.float32))


@pytest.mark.gpu
def test_native_tensorrt_backend_matches_the_cpu_backend(runs, tmp_path, fresh_seed):
    """The runtime's TrtBackend (engines, device buffers, CUDA graph replay) against onnxruntime on the CPU,
    on fresh inputs at every call: a replayed graph must read the new inputs, not the captured ones."""
    pytest.importorskip("tensorrt")
    pytest.importorskip("cuda")
    from sami_rt.backends import open_backend
    from sami_rt.backends.onnxruntime import OrtBackend
    from sami_rt.backends.tensorrt import TrtBackend

    export_bundle(runs["halfunet-attention"] / "run", tmp_path / "b", fp16=True, tensorrt=True, log=lambda s: None)
    b = read_bundle(tmp_path / "b")
    cpu = OrtBackend(b, "cpu")
    rng = np.random.default_rng(fresh_seed)
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
            x = rng.uniform(-1, 1, (B, *b.manifest.image.shape)).astype(np.float32)
            for got, w in zip(be.encode(x), cpu.encode(x)):
                assert np.abs(got - w).max() <= tol * np.abs(w).max()
        assert all(ctx.graph is not None for ctx in be._contexts.values()), be.notes  # graphs were captured


@pytest.mark.gpu
def test_cuda_backend_with_cuda_graphs_matches_the_cpu_backend(bundles, fresh_seed):
    ort = pytest.importorskip("onnxruntime")
    if "CUDAExecutionProvider" not in ort.get_available_providers():
        pytest.skip("onnxruntime here has no CUDA provider (install onnxruntime-gpu)")
    from sami_rt.backends.onnxruntime import OrtBackend

    b = read_bundle(bundles["halfunet-attention"] / "bundle")  # the family with float16 graphs
    cpu = OrtBackend(b, "cpu")
    rng = np.random.default_rng(fresh_seed)
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
