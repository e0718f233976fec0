"""A frozen, pretrained denoiser: only the encoder trains; the three kinds of source; the conversions."""

import json

import numpy as np
import pytest
import torch

from tests.conftest import tiny_config
from train.frozen import FrozenDenoiserError, resolve, to_eps
from train.loop import CHECKPOINT, Trainer, load_checkpoint, load_run


def _denoiser_state(model):
    return {k: v.clone() for k, v in model.denoiser.state_dict().items()}


def test_conversions_to_eps_are_exact_for_gaussian_data(fresh_seed):
    """For x0 ~ N(0, I): E[x0 | x_t] = sqrt(a) x_t and E[eps | x_t] = sqrt(1 - a) x_t (VP). Each
    parameterisation's exact output must convert to that eps."""
    g = torch.Generator().manual_seed(fresh_seed)
    a = torch.rand(6, generator=g, dtype=torch.float64) * 0.98 + 0.01
    x_t = torch.randn(6, 1, 4, 4, generator=g, dtype=torch.float64)
    ar = a.reshape(-1, 1, 1, 1)
    want = (1 - ar).sqrt() * x_t
    x0 = ar.sqrt() * x_t
    v = ar.sqrt() * want - (1 - ar).sqrt() * x0
    torch.testing.assert_close(to_eps("eps", want, x_t, a), want)
    torch.testing.assert_close(to_eps("v", v, x_t, a), want)
    torch.testing.assert_close(to_eps("x0-vp", x0, x_t, a), want)


def test_a_frozen_run_denoiser_is_never_updated(tmp_path, fresh_seed):
    Trainer(tiny_config(steps=2), tmp_path / "joint").run()
    cfg = tiny_config(steps=4, denoiser=str(tmp_path / "joint"), seed=fresh_seed % 1000)
    tr = Trainer(cfg, tmp_path / "frozen")
    before_d, before_e = _denoiser_state(tr.model), {k: v.clone() for k, v in tr.model.encoder.state_dict().items()}
    assert all(not p.requires_grad for p in tr.model.denoiser.parameters())
    tr.run()
    after = _denoiser_state(tr.model)
    assert before_d.keys() == after.keys() and all(torch.equal(before_d[k], after[k]) for k in after)
    assert any(not torch.equal(before_e[k], v) for k, v in tr.model.encoder.state_dict().items())
    joint = load_checkpoint(tmp_path / "joint" / CHECKPOINT)["ema"]
    for k, v in after.items():  # the frozen denoiser is the joint run's EMA denoiser, bit for bit
        assert torch.equal(v, joint["denoiser." + k.removeprefix("net.")])
    model, cfg2, _, step = load_run(tmp_path / "frozen")  # and the run reloads with it
    assert step == 4 and cfg2.denoiser == str(tmp_path / "joint")


def _onnx_eps(path, module, cfg):
    x = torch.randn(2, cfg.channels, cfg.image_size, cfg.image_size)
    t = torch.randint(cfg.T, (2,))
    torch.onnx.export(module, (x, t), str(path), input_names=["x_t", "t"], output_names=["eps"], dynamo=True,
                      dynamic_shapes={"x_t": {0: torch.export.Dim("batch")}, "t": {0: torch.export.Dim("batch")}})


@pytest.fixture(scope="module")
def eps_onnx(tmp_path_factory):
    """A run trained two steps (``DIR/joint``) and its denoiser exported as an eps ONNX graph (``DIR/d.onnx``),
    shared by the tests that train and export against an external ONNX denoiser (one export instead of two)."""
    pytest.importorskip("onnxscript")
    d = tmp_path_factory.mktemp("eps-onnx")
    Trainer(tiny_config(steps=2), d / "joint").run()
    model, cfg, _, _ = load_run(d / "joint")
    _onnx_eps(d / "d.onnx", model.denoiser, cfg)
    return d


def test_an_onnx_eps_denoiser_trains_an_encoder(tmp_path, eps_onnx, fresh_seed):
    model, cfg, abar, _ = load_run(eps_onnx / "joint")
    tr = Trainer(tiny_config(steps=3, denoiser=str(eps_onnx / "d.onnx")), tmp_path / "frozen")
    g = torch.Generator().manual_seed(fresh_seed)
    x = torch.randn(5, cfg.channels, cfg.image_size, cfg.image_size, generator=g)
    t = torch.randint(cfg.T, (5,), generator=g)
    torch.testing.assert_close(tr.model.denoiser(x, t), model.denoiser(x, t), atol=1e-4, rtol=1e-4)
    tr.run()
    assert load_checkpoint(tmp_path / "frozen" / CHECKPOINT)["step"] == 3


class _EDMGaussian(torch.nn.Module):
    """The exact EDM denoiser for x0 ~ N(0, I): D(x, sigma) = x / (1 + sigma^2)."""

    def forward(self, x, sigma):
        return x / (1 + sigma.reshape(-1, 1, 1, 1) ** 2)


def test_an_onnx_x0_sigma_denoiser_is_converted_to_eps(tmp_path, fresh_seed):
    pytest.importorskip("onnxscript")
    x = torch.randn(2, 1, 16, 16)
    torch.onnx.export(_EDMGaussian().eval(), (x, torch.rand(2)), str(tmp_path / "edm.onnx"), input_names=["x", "sigma"],
                      output_names=["D"], dynamo=True,
                      dynamic_shapes={"x": {0: torch.export.Dim("batch")}, "sigma": {0: torch.export.Dim("batch")}})
    cfg, frozen = resolve(tiny_config(denoiser=str(tmp_path / "edm.onnx"), denoiser_param="x0"))
    g = torch.Generator().manual_seed(fresh_seed)
    x_t = torch.randn(7, 1, 16, 16, generator=g)
    t = torch.randint(cfg.T, (7,), generator=g)
    a = frozen.abar[t].reshape(-1, 1, 1, 1)
    want = ((1 - a).sqrt() * x_t.double()).float()
    # x0 -> eps divides by sqrt(1 - a): float32 rounding of D (~1e-7 |x|) grows by 1 / sqrt(1 - a) at low noise
    tol = (4e-7 * x_t.abs().amax() / (1 - a).sqrt()).float() + 1e-6
    assert ((frozen(x_t, t) - want).abs() <= tol).all()


def _diffusers_unet(tmp_path):
    diffusers = pytest.importorskip("diffusers")
    net = diffusers.UNet2DModel(sample_size=16, in_channels=1, out_channels=1, layers_per_block=1,
                                block_out_channels=(8, 16), down_block_types=("DownBlock2D", "DownBlock2D"),
                                up_block_types=("UpBlock2D", "UpBlock2D"), norm_num_groups=4)
    net.save_pretrained(str(tmp_path / "unet"))
    (tmp_path / "scheduler").mkdir()
    (tmp_path / "scheduler" / "scheduler_config.json").write_text(json.dumps(
        {"_class_name": "DDPMScheduler", "beta_schedule": "linear", "beta_start": 1e-4, "beta_end": 0.02,
         "num_train_timesteps": 60, "prediction_type": "epsilon"}))
    return tmp_path / "unet"


def test_a_diffusers_unet_as_frozen_denoiser(tmp_path):
    _diffusers_unet(tmp_path)
    tr = Trainer(tiny_config(steps=3, denoiser=str(tmp_path / "unet")), tmp_path / "frozen")
    assert tr.cfg.T == 60 and tr.cfg.image_size == 16
    before = _denoiser_state(tr.model)
    tr.run()
    after = _denoiser_state(tr.model)
    assert all(torch.equal(before[k], after[k]) for k in after)


def test_a_bad_source_is_one_sentence(tmp_path):
    with pytest.raises(FrozenDenoiserError, match="does not exist"):
        resolve(tiny_config(denoiser=str(tmp_path / "nope")))
    (tmp_path / "empty").mkdir()
    with pytest.raises(FrozenDenoiserError, match="is not a run directory or checkpoint of this project"):
        resolve(tiny_config(denoiser=str(tmp_path / "empty")))
    with pytest.raises(FrozenDenoiserError, match="--denoiser-param must be one of"):
        resolve(tiny_config(denoiser=str(tmp_path / "empty"), denoiser_param="score"))


def test_a_model_on_a_frozen_run_denoiser_exports_and_runs(tmp_path):
    pytest.importorskip("onnxscript")
    from export.core import export_bundle
    from sami_rt.runtime import Runtime

    Trainer(tiny_config(steps=2), tmp_path / "joint").run()
    Trainer(tiny_config(steps=2, denoiser=str(tmp_path / "joint")), tmp_path / "frozen").run()
    export_bundle(tmp_path / "frozen", tmp_path / "bundle", log=lambda s: None)  # validated against PyTorch
    rt = Runtime(tmp_path / "bundle", device="cpu")
    # the default ConvNet (ReLU, no biases): every graph checked against PyTorch at batches 1, 3 and 17
    errs = rt.bundle.manifest.export["validation"]["relative_error"]
    assert set(errs) == {"encoder", "denoiser", "guidance", "guided_eps"}
    assert all(set(e) == {"1", "3", "17"} and max(e.values()) < 1e-4 for e in errs.values())
    # float16 graphs only when asked (--fp16)
    assert rt.bundle.graphs_fp16 == {} and not list((tmp_path / "bundle").glob("*.fp16.onnx"))
    s = rt.generate(z=np.zeros(3), n=2, steps=3)
    assert s.x.shape == (2, 1, 16, 16) and np.all(np.isfinite(s.x))


@pytest.mark.parametrize("param", ["eps", "x0"])
def test_a_model_on_an_external_onnx_denoiser_exports_and_runs(tmp_path, param, request):
    """The bundle wraps the external graph in the denoiser contract and fuses it with the guidance;
    export validates both against PyTorch (which runs the external graph through onnxruntime)."""
    pytest.importorskip("onnxscript")
    from export.core import export_bundle
    from sami_rt.runtime import Runtime

    if param == "eps":
        onnx_file = request.getfixturevalue("eps_onnx") / "d.onnx"
    else:
        onnx_file = tmp_path / "d.onnx"
        x = torch.randn(2, 1, 16, 16)
        torch.onnx.export(_EDMGaussian().eval(), (x, torch.rand(2)), str(onnx_file), input_names=["x", "sigma"],
                          output_names=["D"], dynamo=True,
                          dynamic_shapes={"x": {0: torch.export.Dim("batch")}, "sigma": {0: torch.export.Dim("batch")}})
    Trainer(tiny_config(steps=2, denoiser=str(onnx_file), denoiser_param=param), tmp_path / "frozen").run()
    export_bundle(tmp_path / "frozen", tmp_path / "bundle", log=lambda s: None)
    rt = Runtime(tmp_path / "bundle", device="cpu")
    s = rt.generate(z=np.zeros(3), n=2, steps=3)
    assert s.x.shape == (2, 1, 16, 16) and np.all(np.isfinite(s.x))
    assert rt.bundle.reference is None and not rt.bundle.manifest.flops


@pytest.mark.slow
def test_a_model_on_a_diffusers_denoiser_exports_and_runs(tmp_path):
    pytest.importorskip("onnxscript")
    from export.core import export_bundle
    from sami_rt.runtime import Runtime

    unet = _diffusers_unet(tmp_path)
    Trainer(tiny_config(steps=2, denoiser=str(unet)), tmp_path / "frozen").run()
    export_bundle(tmp_path / "frozen", tmp_path / "bundle", log=lambda s: None)  # validated against PyTorch
    rt = Runtime(tmp_path / "bundle", device="cpu")
    assert rt.bundle.manifest.T == 60
    s = rt.generate(z=np.zeros(3), n=2, steps=3)
    assert s.x.shape == (2, 1, 16, 16) and np.all(np.isfinite(s.x))


def test_your_own_diffusers_ddpm_trains_exports_and_serves_in_three_commands(tmp_path, fresh_seed):
    """README, "Your own denoiser": a DDPMPipeline folder and a folder of images; train/run.py with the
    folder-frozen preset and export/run.py as the README gives them (subprocesses; the test adds only a short
    --steps and --no-eval), then what `sami-rt serve --model BUNDLE` deploys answers a guided request (the
    replica class itself, without Ray)."""
    import base64
    import io
    import subprocess
    import sys
    from pathlib import Path

    import cv2
    diffusers = pytest.importorskip("diffusers")
    pytest.importorskip("onnxscript")
    from sami_rt.scale import serve_api
    from sami_rt.scale.batching import generate_batch
    from sami_rt.scale.serve import SamiRT

    root = Path(__file__).resolve().parent.parent
    rng = np.random.default_rng(fresh_seed)
    torch.manual_seed(fresh_seed % 2**31)
    unet = diffusers.UNet2DModel(sample_size=16, in_channels=3, out_channels=3, layers_per_block=1,
                                 block_out_channels=(8, 16), down_block_types=("DownBlock2D", "DownBlock2D"),
                                 up_block_types=("UpBlock2D", "UpBlock2D"), norm_num_groups=4)
    diffusers.DDPMPipeline(unet=unet, scheduler=diffusers.DDPMScheduler(num_train_timesteps=50)).save_pretrained(
        str(tmp_path / "my-ddpm"))
    (tmp_path / "my-images").mkdir()
    for i in range(8):
        cv2.imwrite(str(tmp_path / "my-images" / f"{i}.png"), rng.integers(0, 256, (20, 20, 3), dtype=np.uint8))
    run = [sys.executable, str(root / "train" / "run.py"), "--config", "folder-frozen", "--denoiser",
           str(tmp_path / "my-ddpm"), "--data-path", str(tmp_path / "my-images"), "--out", str(tmp_path / "runs" / "mine")]
    out = subprocess.run(run + ["--steps", "3", "--no-eval"], capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert "diffusers UNet2DModel, eps); schedule linear, T=50 and image 3x16x16" in out.stderr
    assert "accelerate" not in out.stderr and "Traceback" not in out.stderr
    export = [sys.executable, str(root / "export" / "run.py"), str(tmp_path / "runs" / "mine"), "-o",
              str(tmp_path / "my-model"), "--sampling-steps", "50"]
    out = subprocess.run(export, capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    replica = SamiRT.func_or_class(model=str(tmp_path / "my-model"), device="cpu", threads=1)
    assert replica.rt.bundle.manifest.T == 50 and replica.rt.bundle.manifest.sampling_steps == 50
    png = cv2.imencode(".png", rng.integers(0, 256, (16, 16, 3), dtype=np.uint8))[1].tobytes()
    body = json.dumps({"guide": base64.b64encode(png).decode(), "n": 2, "seed": 3, "format": "npz"}).encode()
    # what the replica does with a POST /generate body (its @serve.batch step needs a running Serve)
    args, fmt, guide_x, _ = serve_api.generate_args(serve_api.parse_body(body, serve_api.GENERATE_FIELDS, "generate"),
                                                    replica.rt)
    [samples] = generate_batch(replica.rt, [args], return_errors=True)
    reply = serve_api.generate_reply(samples, fmt, guide_x)
    with np.load(io.BytesIO(reply.body)) as z:
        assert z["x"].shape == (2, 3, 16, 16) and np.all(np.isfinite(z["x"])) and int(z["steps"]) == 50
