"""Configuration as data: frozen dataclasses, named presets, command-line overrides."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Config:
    # data
    dataset: str = "disks"  # disks | dsprites | fashion-mnist | folder | celeba
    data_path: str = ""  # folder / CelebA root / Fashion-MNIST directory ('' = Debian package) / dSprites .npz
    image_size: int = 32
    channels: int = 1
    n_train: int = 2000  # disks, dsprites: number of training images (0 = a fresh image for every draw); fashion-mnist: the first n of the training split (0 = all; the rest is a validation split)
    data_seed: int = 0
    disk_radius: float = 4.0
    disk_foreground: float = 0.5  # disk intensity in [0, 1]
    disk_bg_min: float = 0.0  # background intensity, uniform in [disk_bg_min, disk_bg_max]
    disk_bg_max: float = 1.0
    # model: sami, or a baseline with the same encoder and a convolutional decoder (train/baselines.py)
    model: str = "sami"  # sami | vae | beta-vae
    vae_beta: float = 4.0  # beta-vae: the final KL weight (the vae's is 1)
    vae_likelihood: str = "gaussian"  # gaussian (fixed sigma) | bernoulli (pixels mapped to [0, 1])
    vae_sigma: float = 0.1  # gaussian likelihood: standard deviation in [-1, 1] pixel units
    # noise schedule
    schedule: str = "linear"  # linear | cosine
    T: int = 400
    beta_start: float = 1e-4
    beta_end: float = 0.02
    # denoiser (UNet)
    unet_channels: int = 32
    unet_mult: tuple[int, ...] = (1, 2, 2)
    unet_res_blocks: int = 1
    unet_attention: tuple[int, ...] = ()  # resolutions with self-attention, e.g. (16,)
    unet_dropout: float = 0.0
    # encoder
    encoder: str = "convnet"  # convnet | half-unet
    latent_dim: int = 3
    enc_channels: tuple[int, ...] = (32, 64)  # convnet: channels of its stride-2 layers
    enc_hidden: int = 0  # convnet: width of a hidden MLP layer before the heads (0 = linear heads)
    enc_bias: bool = False
    enc_act: str = "relu"  # convnet: relu (the paper's) or silu
    enc_pool: str = "flatten"  # convnet: flatten (the paper's) | spatial-softmax (per channel: expected x, y; mean)
    enc_var_init: float = 0.0  # initial posterior variance (0 = PyTorch's default initialisation, ~0.5)
    enc_mult: tuple[int, ...] = (1, 2, 2)  # half-unet
    enc_unet_channels: int = 64  # half-unet
    enc_res_blocks: int = 1  # half-unet
    enc_attention: tuple[int, ...] = ()  # half-unet
    # a frozen, pretrained denoiser (train only the encoder): '' = train both; see train/frozen.py
    denoiser: str = ""  # run directory / checkpoint, diffusers UNet2DModel directory, or .onnx file
    denoiser_param: str = "eps"  # an ONNX denoiser's output: eps | x0 (EDM, inputs x and sigma) | v
    # objective
    kl_weight: float = 1e-3  # final beta
    kl_anneal_start: float = 1e-4  # beta starts at kl_anneal_start * kl_weight ...
    kl_anneal_frac: float = 0.5  # ... and grows exponentially to kl_weight over this fraction of training
    kl_free_bits: float = 0.0  # a floor (nats) on each latent dimension's batch-mean KL in the loss (0 = off)
    prior: str = "gaussian"  # gaussian (the paper's N(0, I)) | smooth-uniform | logistic (objective.log_prior)
    prior_width: float = 1.7320508075688772  # smooth-uniform: the box's half-width (sqrt(3): variance 1)
    prior_smooth: float = 0.1  # smooth-uniform: the standard deviation of the Gaussian that smooths the box's edges
    aux_contrast: float = 0.0  # weight of an augmentation-invariance (InfoNCE) term on the posterior means (train/contrast.py; 0 = off, the paper's objective)
    aux_temperature: float = 0.2  # aux_contrast: the InfoNCE temperature
    aux_contrast_input: str = "mean"  # aux_contrast: what InfoNCE compares: mean (posterior means) | sample (posterior samples, which also taxes a wide posterior)
    t_power: float = 1.0  # t = floor(T * u^(1/t_power)), u ~ U(0,1): 1 uniform, > 1 biased to high noise
    loss_weight: str = "none"  # lambda_t: none | snr-trunc | inv-snr-trunc (see objective.loss_weight)
    guidance_scale: float = 1.0  # s in eps_hat during training; 1 is the exact ELBO
    sampling_scale: float = 1.0  # s for sampling: the evaluation's generation figures and the bundle's default
    # optimisation
    steps: int = 6000
    batch: int = 64
    lr: float = 2e-3
    enc_lr: float = 0.0  # 0 = same as lr
    warmup: int = 200
    lr_decay: str = "none"  # none | cosine
    grad_clip: float = 1.0  # 0 = off
    ema: float = 0.999
    seed: int = 0
    # bookkeeping
    log_every: int = 50
    sample_every: int = 1000
    ckpt_every: int = 500
    eval_at_end: bool = True
    eval_n: int = 1000  # held-out images for evaluation
    eval_steps: int = 100  # sampling steps of the evaluation's generated figures (train/evaluate.py)
    eval_protocol: str = "quick"  # the end-of-run evaluation: quick (evaluate.QUICK's caps) | full
    device: str = "auto"  # auto | cpu | cuda
    threads: int = 0  # torch intra-op threads (0 = measured at the start, train/threads.py; OMP_NUM_THREADS wins)

    def replace(self, **kw: Any) -> "Config":
        return dataclasses.replace(self, **kw)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def image_spec(self):
        """The model's image and its preprocessing (sami_rt.contract.format.ImageSpec), shared with the runtime."""
        from sami_rt.contract.format import ImageSpec, preprocess_for

        return ImageSpec(self.channels, self.image_size, self.image_size, preprocess_for(self.to_dict()))

    def architecture(self):
        """The networks' shape (sami_rt.contract.format.Architecture), kept apart from the training settings."""
        from sami_rt.contract.format import Architecture

        return Architecture.from_config(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    @classmethod
    def from_dict(cls, d: dict) -> "Config":
        names = {f.name: f for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - set(names))
        if unknown:
            raise ValueError(f"unknown configuration keys {unknown}")
        kw = {}
        for k, v in d.items():
            kw[k] = tuple(v) if isinstance(v, list) else v
        return cls(**kw)


PRESETS: dict[str, Config] = {
    # The paper's disks model (Table A.5): ConvNet encoder with ReLU and no biases, UNet without attention.
    "disks": Config(),
    # The same family, sized for 2 CPU cores within an hour (benchmarks/RESULTS.md records the recipe
    # search): a 16-channel UNet; encoder biases (a bias-free ReLU encoder is positively homogeneous, which
    # ties position to contrast); an informative initial posterior; a white disk on a background in
    # [0, 0.6], so that the disk is visible in every image (on [0, 1] backgrounds a 0.5 disk vanishes where
    # the background is 0.5, and its position with it); and the noise levels where the latent matters
    # most, emphasised twice: t drawn with density ~ t (t_power 2) and weighted by max(1, 1/SNR_t).
    # Eight latent dimensions for the three factors: with three the code folds (two positions share a code
    # near the centre) and alone bounds the conditioned variability at ~0.13 of the test set's; with eight
    # it is as sharp as the factors (benchmarks/code_bound.py). Sampled at guidance scale 3, chosen on
    # guides outside the evaluation's (benchmarks/guidance_scale.py); the exact model's s = 1 is evaluated too.
    "disks-small": Config(
        latent_dim=8,
        disk_foreground=1.0,
        disk_bg_max=0.6,
        unet_channels=16,
        unet_mult=(1, 2, 2),
        enc_channels=(32, 64),
        enc_hidden=128,
        enc_bias=True,
        enc_var_init=1e-3,
        n_train=0,
        steps=6000,
        batch=64,
        lr=2e-3,
        enc_lr=1e-3,
        kl_weight=1e-3,
        kl_anneal_start=1e-3,
        t_power=2.0,
        loss_weight="inv-snr-trunc",
        sampling_scale=3.0,
        sample_every=1000,
    ),
    # Fashion-MNIST (Debian package dataset-fashion-mnist, 28x28 padded to 32x32), sized for 2 CPU cores within
    # 90 minutes: the disks-small UNet (16 channels) and encoder with 16 latent dimensions, the whole training
    # set, uniform noise levels and the plain eps loss (natural images: sample quality matters as much as the
    # code). The KL weight is the largest below collapse (benchmarks/kl_search.py, RESULTS.md "Fashion-MNIST").
    "fashion-mnist": Config(
        dataset="fashion-mnist",
        latent_dim=16,
        unet_channels=16,
        unet_mult=(1, 2, 2),
        enc_channels=(32, 64),
        enc_hidden=256,
        enc_bias=True,
        enc_var_init=1e-3,
        n_train=0,
        steps=10000,
        batch=64,
        lr=1e-3,
        kl_weight=0.03,
        kl_anneal_start=1e-3,
        sample_every=2500,
    ),
    # dSprites (train/dsprites.py: the full procedural grid, drawn fresh) rendered at 32x32 for 2 CPU cores, with
    # 10 latent dimensions as disentanglement_lib's models have; the disks-small family otherwise.
    "dsprites": Config(
        dataset="dsprites",
        latent_dim=10,
        n_train=0,
        unet_channels=16,
        enc_channels=(32, 64),
        enc_hidden=128,
        enc_bias=True,
        enc_var_init=1e-3,
        steps=4000,
        batch=64,
        lr=2e-3,
        enc_lr=1e-3,
        kl_weight=1e-3,
        kl_anneal_start=1e-3,
        t_power=2.0,
        loss_weight="inv-snr-trunc",
    ),
    # dSprites at its own 64x64 (GPU): a larger UNet and batch, 10 latent dimensions.
    "dsprites-paper": Config(
        dataset="dsprites",
        image_size=64,
        latent_dim=10,
        n_train=0,
        unet_channels=64,
        unet_mult=(1, 2, 2, 2),
        enc_channels=(32, 32, 64, 64),
        enc_hidden=256,
        enc_bias=True,
        enc_var_init=1e-3,
        steps=100000,
        batch=256,
        lr=2e-4,
        kl_weight=1e-3,
        kl_anneal_start=1e-3,
        sample_every=5000,
        ckpt_every=5000,
    ),
    # Paper, Table A.5: half-UNet encoder with two MLP heads, latent dim 256, cosine schedule, T=1000.
    "celeba64": Config(
        dataset="celeba",
        image_size=64,
        channels=3,
        schedule="cosine",
        T=1000,
        unet_channels=128,
        unet_mult=(1, 2, 2, 2),
        unet_res_blocks=2,
        unet_dropout=0.1,
        encoder="half-unet",
        latent_dim=256,
        enc_unet_channels=64,
        enc_mult=(1, 2, 2, 2),
        enc_res_blocks=2,
        enc_bias=True,
        kl_weight=1e-3,
        steps=200000,
        batch=64,
        lr=1e-4,
        grad_clip=1.0,
        ema=0.9999,
        sample_every=5000,
        ckpt_every=5000,
    ),
    # Paper: an encoder trained against the frozen public DDPM google/ddpm-celebahq-256 (GPU). Give the local
    # diffusers directory with --denoiser and the images with --data-path (a folder of 256x256 faces).
    "celebahq256-frozen": Config(
        dataset="folder",
        image_size=256,
        channels=3,
        schedule="linear",
        T=1000,
        encoder="half-unet",
        latent_dim=512,
        enc_unet_channels=64,
        enc_mult=(1, 1, 2, 2, 4, 4),
        enc_res_blocks=1,
        enc_bias=True,
        kl_weight=1e-8,
        lr=3e-5,
        enc_lr=3e-5,
        t_power=2.0,
        steps=50000,
        batch=16,
        ema=0.9999,
        sample_every=5000,
        ckpt_every=2000,
    ),
    # Your own pretrained denoiser on your own images: an encoder trained against --denoiser (a diffusers DDPM
    # folder, a run of this project or an ONNX file) on the images under --data-path, whose image size and
    # channels the denoiser sets. Sized for a CPU: a ConvNet encoder with four stride-2 layers (any size from
    # 16 px), 16 latent dimensions, the high noise levels emphasised as in celebahq256-frozen.
    "folder-frozen": Config(
        dataset="folder",
        latent_dim=16,
        enc_channels=(32, 64, 64, 64),
        enc_hidden=256,
        enc_bias=True,
        enc_var_init=1e-3,
        kl_weight=1e-3,
        kl_anneal_start=1e-3,
        t_power=2.0,
        steps=2000,
        batch=32,
        lr=1e-3,
        enc_lr=1e-3,
        sample_every=500,
    ),
}

# Three latent dimensions for the disks' three factors, trained jointly with the denoiser (issue 29; RESULTS.md
# "Issue 29: a fold-free Cartesian code"): the disks-small recipe with two options beyond the paper. The paper's
# own recipe (bias-free flattened ConvNet, uniform t, plain loss, N(0, I), KL annealed to 1) collapsed by KL
# weight ~0.1 with a folded, weak code on the way; flattened encoders folded under either prior. What gave one
# Cartesian axis per factor, on two seeds: the encoder reads positions by a spatial softmax (enc_pool), and the
# prior is a smoothed box (prior smooth-uniform), which squeezes no rim and is not rotation invariant, so the
# x-y rotation decays during training. KL weight annealed from 1e-4 of 1 to 1 over the first 2,000 steps.
# The shipped bundle then resumes for 2,000 more steps at KL weight 0.1 (``--resume RUN --steps 8000
# --kl-weight 0.1``: the axes stay, the code keeps ~7 nats instead of ~4; README "The 3-dimensional disks model").
PRESETS["disks-3d"] = PRESETS["disks-small"].replace(
    latent_dim=3, enc_hidden=0, enc_pool="spatial-softmax", prior="smooth-uniform", kl_weight=1.0,
    kl_anneal_start=1e-4, kl_anneal_frac=1 / 3, steps=6000)


def field_help(width: int = 110) -> str:
    """Every Config field as ``--field-name`` with its default (the base Config's; presets change some) and the
    comment beside it in this file: the option list of train/run.py's --help, written once, here."""
    import inspect
    import re
    import textwrap

    comments = {}
    for line in inspect.getsource(Config).splitlines():
        m = re.match(r"\s+(\w+): [^=]+=.*?#\s*(.*)$", line)
        if m:
            comments[m.group(1)] = m.group(2)
    out = []
    for f in dataclasses.fields(Config):
        v = getattr(Config(), f.name)
        shown = (",".join(map(str, v)) or "''") if isinstance(v, tuple) else (repr(v) if v == "" else str(v).lower()
                                                                     if isinstance(v, bool) else str(v))
        head = f"  --{f.name.replace('_', '-')} {shown}"
        text = comments.get(f.name, "")
        if not text:
            out.append(head)
            continue
        pad = " " * 34
        lines = textwrap.wrap(text, width - len(pad))
        out.append(head.ljust(len(pad) - 1) + " " + lines[0] if len(head) < len(pad) - 1 else head + "\n" + pad + lines[0])
        out.extend(pad + ln for ln in lines[1:])
    return "\n".join(out)


def _parse_value(text: str, current: Any, key: str) -> Any:
    try:
        if isinstance(current, bool):
            low = text.lower()
            if low in ("1", "true", "yes", "on"):
                return True
            if low in ("0", "false", "no", "off"):
                return False
            raise ValueError
        if isinstance(current, int):
            return int(text)
        if isinstance(current, float):
            return float(text)
        if isinstance(current, tuple):
            text = text.strip().strip("()[]")
            return tuple(int(p) for p in text.replace(",", " ").split())
        return text
    except ValueError:
        kind = type(current).__name__
        raise ValueError(f"--{key.replace('_', '-')} expects a {kind}, got {text!r}") from None


def apply_overrides(cfg: Config, args: list[str]) -> Config:
    """Apply ``--key value`` / ``--key=value`` pairs (dashes or underscores) to a configuration."""
    fields = {f.name: f for f in dataclasses.fields(cfg)}
    updates: dict[str, Any] = {}
    i = 0
    while i < len(args):
        arg = args[i]
        if not arg.startswith("--"):
            raise ValueError(f"expected an option --key value, got {arg!r}")
        key, eq, val = arg[2:].partition("=")
        if not eq:
            if i + 1 >= len(args):
                raise ValueError(f"option {arg} needs a value")
            val = args[i + 1]
            i += 1
        i += 1
        key = key.replace("-", "_")
        if key not in fields:
            raise ValueError(f"unknown configuration key --{key.replace('_', '-')}")
        updates[key] = _parse_value(val, getattr(cfg, key), key)
    return cfg.replace(**updates)


def get_config(name: str, overrides: list[str] | None = None) -> Config:
    if name not in PRESETS:
        raise ValueError(f"unknown configuration {name!r}; expected one of {sorted(PRESETS)}")
    return apply_overrides(PRESETS[name], overrides or [])
