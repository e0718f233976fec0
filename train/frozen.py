"""Frozen, pretrained denoisers: train only the encoder on top of them (``--denoiser SOURCE``).

The paper's most practical result: an inference network trained against a frozen diffusion model gives
useful, guidable latents with a fraction of the training. The denoiser is only ever run forward, without
gradients; the loss reaches the encoder through the guidance alone.

SOURCE is one of
- a run directory or checkpoint of this project: its UNet (EMA weights), noise prediction, its schedule;
- a diffusers ``UNet2DModel`` directory (``config.json`` with ``_class_name: UNet2DModel`` and its weights),
  with the scheduler configuration next to it (``scheduler_config.json`` in the directory, in its
  ``scheduler/`` sub-directory, or in the parent's ``scheduler/``, the layout of ``google/ddpm-*`` models);
  the schedule and the parameterisation (``epsilon``, ``v_prediction``, ``sample``) come from that file;
- an ONNX file run through onnxruntime, its parameterisation declared with ``--denoiser-param``:
  ``eps`` and ``v`` take ``(x_t, t)`` on this configuration's variance-preserving schedule; ``x0`` takes
  ``(x, sigma)`` in the variance-exploding convention of EDM (Karras et al. 2022) and returns the denoised
  image D(x, sigma). The image shape comes from the graph's declared input [batch, C, H, W]; dimensions it
  leaves dynamic keep the configuration's, and a trial call checks that the graph runs on that shape.

Conversions to the noise prediction this project trains and samples with (VP: x_t = sqrt(a) x0 + sqrt(1-a) eps,
a = abar_t; defined once in ``sami_rt.sampling.schedule``, which export/compose.py builds its graphs from as well):
- x0 (EDM): x = x_t / sqrt(a) and sigma = sqrt((1 - a) / a) (the same noisy image on the VE scale);
  eps = (x_t - sqrt(a) D(x, sigma)) / sqrt(1 - a);
- v (Salimans & Ho 2022, v = sqrt(a) eps - sqrt(1-a) x0): eps = sqrt(a) v + sqrt(1 - a) x_t;
- sample (diffusers' x0 prediction on the VP scale): eps = (x_t - sqrt(a) x0) / sqrt(1 - a).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn

from sami_rt.sampling.schedule import eps_from_prediction, make_abar, ve_image, ve_sigma

PARAMS = ("eps", "x0", "v")
DIFFUSERS_SCHEDULES = {"linear": "linear", "scaled_linear": "scaled-linear", "squaredcos_cap_v2": "cosine"}
DIFFUSERS_PARAMS = {"epsilon": "eps", "v_prediction": "v", "sample": "x0-vp"}


class FrozenDenoiserError(ValueError):
    """A --denoiser source that cannot be used, in one sentence."""


def to_eps(kind: str, out: torch.Tensor, x_t: torch.Tensor, abar_t: torch.Tensor) -> torch.Tensor:
    """A denoiser's output in parameterisation ``kind`` (eps | v | x0-vp) as a noise prediction
    (``sami_rt.sampling.schedule.eps_from_prediction``, the definition export's graphs use too)."""
    a = abar_t.reshape(-1, *([1] * (x_t.dim() - 1))).to(x_t.dtype)
    return eps_from_prediction(kind, out, x_t, a.sqrt(), (1 - a).sqrt())


class FrozenDenoiser(nn.Module):
    """eps(x_t, t) from a frozen network; never trained (no parameters reach the optimiser)."""

    def __init__(self, kind: str, abar: np.ndarray, module: nn.Module | None = None, onnx_path: str | None = None,
                 param: str = "eps", source: str = ""):
        super().__init__()
        self.kind, self.param, self.source = kind, param, source
        self.summary = f"denoiser: {source}"  # what the run takes from it, in one line (resolve sets it)
        self.register_buffer("abar", torch.from_numpy(np.asarray(abar, dtype=np.float64)), persistent=False)
        self.net = module
        if self.net is not None:
            self.net.requires_grad_(False).eval()
        self._session = None
        if onnx_path is not None:
            import onnxruntime as ort

            from sami_rt.backends.onnxruntime import cpu_session_options

            self._session = ort.InferenceSession(onnx_path, cpu_session_options(ort), providers=["CPUExecutionProvider"])
            self._run_options = ort.RunOptions()
            self._run_options.log_severity_level = 4  # a failing call raises; no second, coloured copy on stderr
            self._inputs = [i.name for i in self._session.get_inputs()]
            if len(self._inputs) != 2:
                raise FrozenDenoiserError(f"{onnx_path} has inputs {self._inputs}; a denoiser takes two "
                                          "((x_t, t) for eps and v, (x, sigma) for x0)")

    def __deepcopy__(self, memo):  # the EMA copy shares the frozen network (and any onnxruntime session)
        return self

    def train(self, mode: bool = True):  # always in eval mode (dropout off)
        super().train(False)
        return self

    @torch.no_grad()
    def forward(self, x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        a = self.abar.to(x_t.device)[t]
        if self.kind == "torch":
            return self.net(x_t, t)
        if self.kind == "diffusers":
            return to_eps(self.param, self.net(x_t, t).sample, x_t, a)
        if self.param == "x0":  # EDM: the same image on the variance-exploding scale
            sa, s1ma = a.sqrt(), (1 - a).sqrt()
            ve = ve_image(x_t, sa.reshape(-1, 1, 1, 1).to(x_t.dtype)).cpu().float().numpy()
            sigma = ve_sigma(sa, s1ma).cpu().float().numpy()
            d = self._session.run(None, {self._inputs[0]: ve, self._inputs[1]: sigma}, self._run_options)[0]
            return to_eps("x0-vp", torch.from_numpy(d).to(x_t), x_t, a)
        x = x_t.detach().cpu().float().numpy()
        feeds = {self._inputs[0]: x, self._inputs[1]: t.cpu().numpy().astype(np.int64)}
        out = self._session.run(None, feeds, self._run_options)[0]
        return to_eps(self.param, torch.from_numpy(out).to(x_t), x_t, a)


def _diffusers_scheduler(path: Path) -> dict:
    for cand in (path / "scheduler_config.json", path / "scheduler" / "scheduler_config.json",
                 path.parent / "scheduler" / "scheduler_config.json"):
        if cand.is_file():
            return json.loads(cand.read_text())
    raise FrozenDenoiserError(
        f"no scheduler_config.json for the diffusers model {path} (looked in it, in its scheduler/ folder and in the "
        f"parent's scheduler/ folder): save the scheduler the model was trained with beside it, e.g. python -c "
        f"\"from diffusers import DDPMScheduler; DDPMScheduler(num_train_timesteps=1000).save_pretrained('{path}')\", "
        f"or give the folder that DDPMPipeline.save_pretrained wrote")


def resolve(cfg):
    """(configuration with the frozen denoiser's schedule and image shape, FrozenDenoiser); cfg.denoiser set."""
    src = Path(cfg.denoiser)
    if not src.exists():
        raise FrozenDenoiserError(f"--denoiser {src} does not exist")
    if cfg.denoiser_param not in PARAMS:
        raise FrozenDenoiserError(f"--denoiser-param must be one of {', '.join(PARAMS)}, got {cfg.denoiser_param!r}")
    if src.suffix == ".onnx":
        abar = make_abar(cfg.schedule, cfg.T, cfg.beta_start, cfg.beta_end)
        frozen = FrozenDenoiser("onnx", abar, onnx_path=str(src), param=cfg.denoiser_param, source=str(src))
        cfg = _onnx_image(cfg, frozen, src)
        _check_channels(cfg, src)
        return cfg, frozen
    if src.is_dir() and (src / "model_index.json").is_file() and (src / "unet" / "config.json").is_file():
        src = src / "unet"  # a diffusers pipeline folder (DDPMPipeline.save_pretrained): its UNet, its scheduler/
    if src.is_dir() and (src / "config.json").is_file() and json.loads((src / "config.json").read_text()).get(
            "_class_name") == "UNet2DModel":
        try:
            import diffusers
            from diffusers import UNet2DModel
        except ImportError:
            raise FrozenDenoiserError("a diffusers model as --denoiser needs the diffusers package "
                                      "(pip install diffusers)") from None
        diffusers.utils.logging.set_verbosity_error()  # its notices (accelerate, deprecations) are not the user's
        sch = _diffusers_scheduler(src)
        kind = DIFFUSERS_SCHEDULES.get(sch.get("beta_schedule", "linear"))
        param = DIFFUSERS_PARAMS.get(sch.get("prediction_type", "epsilon"))
        if kind is None or param is None:
            raise FrozenDenoiserError(f"{src}: scheduler beta_schedule {sch.get('beta_schedule')!r} or prediction_type "
                                      f"{sch.get('prediction_type')!r} is not supported")
        net = UNet2DModel.from_pretrained(str(src), low_cpu_mem_usage=False)  # no accelerate needed
        cfg = cfg.replace(schedule=kind, T=int(sch.get("num_train_timesteps", 1000)),
                          beta_start=float(sch.get("beta_start", 1e-4)), beta_end=float(sch.get("beta_end", 0.02)),
                          channels=int(net.config.in_channels), image_size=int(net.config.sample_size))
        abar = make_abar(cfg.schedule, cfg.T, cfg.beta_start, cfg.beta_end)
        frozen = FrozenDenoiser("diffusers", abar, module=net, param=param, source=str(src))
        frozen.summary = (f"denoiser: {src} (diffusers UNet2DModel, {param}); schedule {kind}, T={cfg.T} and image "
                          f"{_shape(cfg)} from its configuration")
        _check_channels(cfg, src)
        return cfg, frozen
    from train.config import Config
    from train.io import checkpoint_path, load_checkpoint
    from train.nets import build_denoiser

    path = checkpoint_path(src)
    if not path.is_file():
        raise FrozenDenoiserError(f"--denoiser {src} is not a run directory or checkpoint of this project, a diffusers "
                                  "UNet2DModel directory or an .onnx file")
    ck = load_checkpoint(path)
    scfg = Config.from_dict(ck["config"])
    net = build_denoiser(scfg)
    net.load_state_dict({k[len("denoiser."):]: v for k, v in ck["ema"].items() if k.startswith("denoiser.")})
    cfg = cfg.replace(schedule=scfg.schedule, T=scfg.T, beta_start=scfg.beta_start, beta_end=scfg.beta_end,
                      channels=scfg.channels, image_size=scfg.image_size)
    abar = ck["abar"].numpy()
    frozen = FrozenDenoiser("torch", abar, module=net, param="eps", source=str(src))
    frozen.summary = (f"denoiser: {src} (a run of this project); schedule {cfg.schedule}, T={cfg.T} and image "
                      f"{_shape(cfg)} from its checkpoint")
    return cfg, frozen


def _shape(cfg) -> str:
    return f"{cfg.channels}x{cfg.image_size}x{cfg.image_size}"



def _check_channels(cfg, src) -> None:
    from train.data import GREY_DATASETS

    if cfg.channels != 1 and cfg.dataset in GREY_DATASETS:
        raise FrozenDenoiserError(f"--denoiser {src} takes {cfg.channels}-channel images, but the {cfg.dataset} data "
                                  "are grey (one channel); train it on --dataset folder or celeba")


def _onnx_image(cfg, frozen: FrozenDenoiser, src: Path):
    """The configuration with the image shape the ONNX graph declares on its first input ([batch, C, H, W]);
    dimensions it leaves dynamic keep the configuration's. Either way one call on a zero image of the
    resulting shape must run and return that shape, so that a graph that does not fit stops the run here, in
    one sentence, rather than in onnxruntime at the first training step."""
    inp = frozen._session.get_inputs()[0]
    shape = [d if isinstance(d, int) and d > 0 else None for d in inp.shape]
    declared = "[" + ", ".join(str(d) if d is not None else "?" for d in inp.shape) + "]"
    if len(shape) != 4:
        raise FrozenDenoiserError(f"--denoiser {src}: its input {inp.name!r} has shape {declared}; a denoiser takes "
                                  "images [batch, channels, height, width]")
    for i in frozen._session.get_inputs():  # training feeds whole batches: a batch axis fixed at export cannot take them
        if i.shape and isinstance(i.shape[0], int) and i.shape[0] > 0:
            raise FrozenDenoiserError(f"--denoiser {src}: its input {i.name!r} declares a fixed batch of {i.shape[0]}; "
                                      "export the graph with a dynamic batch dimension")
    C, H, W = shape[1:]
    if H is not None and W is not None and H != W:
        raise FrozenDenoiserError(f"--denoiser {src}: its input {inp.name!r} declares {H}x{W} images; training "
                                  "takes square images")
    size = H or W
    was = _shape(cfg)
    cfg = cfg.replace(channels=C or cfg.channels, image_size=size or cfg.image_size)
    now = _shape(cfg)
    if C and size:
        frozen.summary = (f"denoiser: {src} (ONNX, {frozen.param}); image {now} from its input shape {declared}"
                          + (f" (the configuration said {was})" if now != was else ""))
    elif C or size:  # one of the two declared: say which came from where
        graph, config = ("channels", "size") if C else ("size", "channels")
        frozen.summary = (f"denoiser: {src} (ONNX, {frozen.param}); image {now}: the {graph} from its input shape "
                          f"{declared}, the {config} from the configuration")
    else:
        frozen.summary = (f"denoiser: {src} (ONNX, {frozen.param}); its input shape {declared} leaves the image "
                          f"open: {now} from the configuration")
    x = torch.zeros(2, cfg.channels, cfg.image_size, cfg.image_size)
    try:
        out = frozen(x, torch.full((2,), len(frozen.abar) - 1, dtype=torch.int64))
    except Exception as e:  # onnxruntime's own errors (several lines each): keep the first
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        first = first if len(first) <= 240 else "... " + first[-240:]  # the end says what did not fit
        raise FrozenDenoiserError(f"--denoiser {src} does not run on a {now} image (input shape {declared}; the "
                                  f"image size and channels come from the configuration where the graph leaves "
                                  f"them open): {first}") from None
    if tuple(out.shape) != tuple(x.shape):
        raise FrozenDenoiserError(f"--denoiser {src} returns shape {list(out.shape)} for a {now} image; a denoiser "
                                  "returns the image's shape")
    return cfg
