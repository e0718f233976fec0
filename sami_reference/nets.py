"""Networks: the UNet denoiser eps_theta(x_t, t) and the encoders q_phi(z | x) (ConvNet, half-UNet).

The encoders never receive the noise level: the same network scores clean and noisy images.
Both encoders return (mu, var) with var = softplus(h)^2 + VAR_FLOOR.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

VAR_FLOOR = 1e-6  # keeps 1/var finite in the guidance; far below any variance a trained model uses


def timestep_embedding(t: torch.Tensor, dim: int) -> torch.Tensor:
    """Sinusoidal embedding of integer timesteps [B] -> [B, dim] (Vaswani et al. 2017)."""
    half = dim // 2
    freqs = torch.exp(-math.log(10000.0) * torch.arange(half, dtype=torch.float32, device=t.device) / half)
    args = t.to(torch.float32)[:, None] * freqs[None]
    return torch.cat([torch.cos(args), torch.sin(args)], dim=1)


def _norm(ch: int) -> nn.GroupNorm:
    return nn.GroupNorm(min(8, ch), ch)


class ResBlock(nn.Module):
    def __init__(self, cin: int, cout: int, temb: int = 0, dropout: float = 0.0, bias: bool = True):
        super().__init__()
        self.norm1, self.conv1 = _norm(cin), nn.Conv2d(cin, cout, 3, padding=1, bias=bias)
        self.temb = nn.Linear(temb, cout) if temb else None
        self.norm2, self.conv2 = _norm(cout), nn.Conv2d(cout, cout, 3, padding=1, bias=bias)
        self.drop = nn.Dropout(dropout)
        self.skip = nn.Conv2d(cin, cout, 1, bias=bias) if cin != cout else nn.Identity()

    def forward(self, x: torch.Tensor, emb: torch.Tensor | None = None) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        if self.temb is not None:
            h = h + self.temb(F.silu(emb))[:, :, None, None]
        h = self.conv2(self.drop(F.silu(self.norm2(h))))
        return self.skip(x) + h


class Attention(nn.Module):
    """Single-head self-attention over the spatial positions."""

    def __init__(self, ch: int, bias: bool = True):
        super().__init__()
        self.norm = _norm(ch)
        self.qkv = nn.Conv2d(ch, 3 * ch, 1, bias=bias)
        self.out = nn.Conv2d(ch, ch, 1, bias=bias)

    def forward(self, x: torch.Tensor, emb: torch.Tensor | None = None) -> torch.Tensor:
        B, C, H, W = x.shape
        q, k, v = self.qkv(self.norm(x)).reshape(B, 3, C, H * W).unbind(1)  # (B, C, HW) each
        w = torch.softmax(torch.einsum("bci,bcj->bij", q, k) / math.sqrt(C), dim=-1)  # (B, HW, HW)
        h = torch.einsum("bij,bcj->bci", w, v).reshape(B, C, H, W)
        return x + self.out(h)


class Down(nn.Module):
    def __init__(self, ch: int, bias: bool = True):
        super().__init__()
        self.conv = nn.Conv2d(ch, ch, 3, stride=2, padding=1, bias=bias)

    def forward(self, x, emb=None):
        return self.conv(x)


class Up(nn.Module):
    def __init__(self, ch: int):
        super().__init__()
        self.conv = nn.Conv2d(ch, ch, 3, padding=1)

    def forward(self, x, emb=None):
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))


class DownPath(nn.Module):
    """UNet down and mid blocks, shared by the denoiser and the half-UNet encoder."""

    def __init__(self, cin, ch, mult, res_blocks, attention, size, temb=0, dropout=0.0, bias=True):
        super().__init__()
        self.conv_in = nn.Conv2d(cin, ch, 3, padding=1, bias=bias)
        self.blocks = nn.ModuleList()
        self.skip_channels = [ch]
        c, res = ch, size
        for level, m in enumerate(mult):
            for _ in range(res_blocks):
                self.blocks.append(ResBlock(c, ch * m, temb, dropout, bias))
                c = ch * m
                if res in attention:
                    self.blocks.append(Attention(c, bias))
                self.skip_channels.append(c)
            if level != len(mult) - 1:
                self.blocks.append(Down(c, bias))
                res //= 2
                self.skip_channels.append(c)
        self.mid = nn.ModuleList([ResBlock(c, c, temb, dropout, bias), ResBlock(c, c, temb, dropout, bias)])
        if attention:
            self.mid.insert(1, Attention(c, bias))
        self.out_channels, self.out_res = c, res

    def forward(self, x, emb=None):
        h = self.conv_in(x)
        skips = [h]
        for blk in self.blocks:
            h = blk(h, emb)
            if not isinstance(blk, Attention):
                skips.append(h)
            else:
                skips[-1] = h
        for blk in self.mid:
            h = blk(h, emb)
        return h, skips


class UNet(nn.Module):
    """eps_theta(x_t, t): DDPM-style UNet (Ho et al. 2020), optional self-attention at chosen resolutions."""

    def __init__(self, channels=1, size=32, ch=32, mult=(1, 2, 2), res_blocks=1, attention=(), dropout=0.0):
        super().__init__()
        temb = 4 * ch
        self.ch = ch
        self.temb = nn.Sequential(nn.Linear(ch, temb), nn.SiLU(), nn.Linear(temb, temb))
        self.down = DownPath(channels, ch, mult, res_blocks, attention, size, temb, dropout)
        skips = list(self.down.skip_channels)
        c, res = self.down.out_channels, self.down.out_res
        self.up = nn.ModuleList()
        for level, m in reversed(list(enumerate(mult))):
            for _ in range(res_blocks + 1):
                self.up.append(ResBlock(c + skips.pop(), ch * m, temb, dropout))
                c = ch * m
                if res in attention:
                    self.up.append(Attention(c))
            if level != 0:
                self.up.append(Up(c))
                res *= 2
        self.norm_out = _norm(c)
        self.conv_out = nn.Conv2d(c, channels, 3, padding=1)

    def forward(self, x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        emb = self.temb(timestep_embedding(t, self.ch).to(x_t.dtype))
        h, skips = self.down(x_t, emb)
        for blk in self.up:
            if isinstance(blk, ResBlock):
                h = blk(torch.cat([h, skips.pop()], dim=1), emb)
            else:
                h = blk(h, emb)
        return self.conv_out(F.silu(self.norm_out(h)))


def _var(h: torch.Tensor, width: int = 1) -> torch.Tensor:
    """softplus(h)^2 + VAR_FLOOR, computed on h's last axis zero-padded to a multiple of ``width`` columns.

    The exported graphs use width 16 (``export.graphs.export_copy``): onnxruntime computes the last, partial
    vector of an elementwise transcendental op (Softplus, Log, Exp) with scalar code, so without the padding an
    element's variance, and the guidance through it, changed in its last bits with the batch size wherever
    batch x latent_dim is not a multiple of the vector width (disks-3d, 3 dimensions). The padded columns are
    sliced away; the value is the same function of h."""
    d = h.shape[-1]
    pad = -d % width
    if pad:
        return (F.softplus(F.pad(h, (0, pad))) ** 2 + VAR_FLOOR)[..., :d]
    return F.softplus(h) ** 2 + VAR_FLOOR


def init_variance_head(layer: nn.Linear, var_init: float) -> None:
    """Start every posterior variance near ``var_init`` (0 leaves PyTorch's default initialisation).

    With the default initialisation the posterior variance starts near 0.5 while the means barely vary
    between images, so z ~ q(z | x_0) is almost pure noise and the guidance carries no signal; a small
    initial variance makes z informative from the first step.
    """
    if var_init <= 0:
        return
    with torch.no_grad():
        layer.weight.mul_(0.1)
        layer.bias.fill_(math.log(math.expm1(math.sqrt(var_init))))


ACTIVATIONS = {"relu": nn.ReLU, "silu": nn.SiLU}


ENCODER_POOLS = ("flatten", "spatial-softmax")


class SpatialSoftmax(nn.Module):
    """Feature maps [B, C, H, W] -> [B, 3C]: per channel the expected position (x, then y, in [-1, 1] across the
    map) under a softmax over the map of a 1x1-convolved copy (the keypoints of Finn et al. 2016's deep spatial
    autoencoder), and the channel's mean. A position read this way moves smoothly and monotonically with what a
    channel responds to, and the heads see it directly instead of a flattened map's weights."""

    def __init__(self, channels: int, size: int, bias: bool = True):
        super().__init__()
        self.logits = nn.Conv2d(channels, channels, 1, bias=bias)
        coords = torch.linspace(-1.0, 1.0, size)
        self.register_buffer("grid_x", coords.repeat(size), persistent=False)  # row-major H*W: x varies fastest
        self.register_buffer("grid_y", coords.repeat_interleave(size), persistent=False)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        w = torch.softmax(self.logits(h).flatten(2), dim=2)  # [B, C, H*W]
        return torch.cat([w @ self.grid_x, w @ self.grid_y, h.flatten(2).mean(2)], dim=1)


class ConvEncoder(nn.Module):
    """The paper's disks encoder: stride-2 convolutions with ReLU (or SiLU, whose input gradient, and so the
    guidance, is smooth), then linear (or one-hidden-layer) heads on the flattened maps (``pool`` flatten, the
    paper's) or on each channel's expected position and mean (``pool`` spatial-softmax, beyond the paper)."""

    var_width = 1  # columns the variance's softplus is padded to (_var); exported copies use 16

    def __init__(self, channels=1, size=32, latent_dim=3, conv=(32, 64), hidden=0, bias=False, var_init=0.0,
                 act="relu", pool="flatten"):
        super().__init__()
        if act not in ACTIVATIONS:
            raise ValueError(f"unknown encoder activation {act!r}; expected one of {sorted(ACTIVATIONS)}")
        if pool not in ENCODER_POOLS:
            raise ValueError(f"unknown encoder pooling {pool!r}; expected one of {', '.join(ENCODER_POOLS)}")
        layers, c = [], channels
        for cout in conv:
            layers += [nn.Conv2d(c, cout, 4, stride=2, padding=1, bias=bias), ACTIVATIONS[act]()]
            c = cout
        side = size // 2 ** len(conv)
        if pool == "spatial-softmax":
            self.features = nn.Sequential(*layers, SpatialSoftmax(c, side, bias))
            n = 3 * c
        else:
            self.features = nn.Sequential(*layers, nn.Flatten())
            n = c * side**2
        self.hidden = nn.Sequential(nn.Linear(n, hidden, bias=bias), ACTIVATIONS[act]()) if hidden else nn.Identity()
        n = hidden or n
        self.mu = nn.Linear(n, latent_dim, bias=bias)
        self.var = nn.Linear(n, latent_dim, bias=True)  # the variance head keeps a bias: var(0) must not be fixed
        init_variance_head(self.var, var_init)

    def trunk(self, x: torch.Tensor) -> torch.Tensor:
        return self.hidden(self.features(x))

    def heads(self, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.mu(h), _var(self.var(h), self.var_width)

    def trunk_modules(self) -> list[nn.Module]:
        """Modules a half-precision export may run in float16: none. The guidance of a ReLU network is
        piecewise constant in its activation pattern, and float16 rounding flips the units near zero, each
        moving g by that unit's whole weight vector (measured: 3-11% of max |g|). The encoder is small."""
        return []

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.heads(self.trunk(x))


class HalfUNetEncoder(nn.Module):
    """UNet down and mid blocks (no time input), global average pooling, two MLP heads (mean, variance)."""

    var_width = 1  # columns the variance's softplus is padded to (_var); exported copies use 16

    def __init__(self, channels=3, size=64, latent_dim=256, ch=64, mult=(1, 2, 2, 2), res_blocks=1,
                 attention=(), bias=True, var_init=0.0):
        super().__init__()
        self.down = DownPath(channels, ch, mult, res_blocks, attention, size, 0, 0.0, bias)
        c = self.down.out_channels
        self.norm = _norm(c)
        self.mu = nn.Sequential(nn.Linear(c, 2 * c, bias=bias), nn.SiLU(), nn.Linear(2 * c, latent_dim, bias=bias))
        self.var = nn.Sequential(nn.Linear(c, 2 * c, bias=bias), nn.SiLU(), nn.Linear(2 * c, latent_dim))
        init_variance_head(self.var[-1], var_init)

    def trunk(self, x: torch.Tensor) -> torch.Tensor:
        h, _ = self.down(x)
        return F.silu(self.norm(h)).mean(dim=(2, 3))  # (B, C)

    def heads(self, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.mu(h), _var(self.var(h), self.var_width)

    def trunk_modules(self) -> list[nn.Module]:
        return [self.down, self.norm]

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.heads(self.trunk(x))


def build_denoiser(cfg) -> UNet:
    return UNet(cfg.channels, cfg.image_size, cfg.unet_channels, cfg.unet_mult, cfg.unet_res_blocks,
                cfg.unet_attention, cfg.unet_dropout)


def build_encoder(cfg) -> nn.Module:
    if cfg.encoder == "convnet":
        return ConvEncoder(cfg.channels, cfg.image_size, cfg.latent_dim, cfg.enc_channels, cfg.enc_hidden, cfg.enc_bias,
                           cfg.enc_var_init, getattr(cfg, "enc_act", "relu"), getattr(cfg, "enc_pool", "flatten"))
    if cfg.encoder == "half-unet":
        return HalfUNetEncoder(cfg.channels, cfg.image_size, cfg.latent_dim, cfg.enc_unet_channels, cfg.enc_mult,
                               cfg.enc_res_blocks, cfg.enc_attention, cfg.enc_bias, cfg.enc_var_init)
    raise ValueError(f"unknown encoder {cfg.encoder!r}; expected convnet or half-unet")


class SAMI(nn.Module):
    """The pair (denoiser, encoder); the objective and samplers live in objective.py / sampling.py."""

    def __init__(self, cfg):
        super().__init__()
        self.denoiser = build_denoiser(cfg)
        self.encoder = build_encoder(cfg)
