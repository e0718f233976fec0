"""The four contract graphs as torch modules ready for ``torch.onnx.export``.

The guidance g = grad_{x_t} log q(z | x_t) cannot be exported as ``torch.autograd.grad`` inside
``forward``: neither ONNX exporter accepts it. Instead the log-likelihood is written functionally (the
encoder's parameters passed in through ``torch.func.functional_call``), ``torch.func.grad`` of it is
traced by ``make_fx`` into plain ATen operations (symbolic shapes, so the batch axis stays dynamic), and
the traced graph is wrapped in a module that holds the parameters as buffers. Three decompositions of our
own keep the traced backward within operators the ONNX exporter knows:

- ``convolution_backward`` -> a transposed convolution with the same weights (the input gradient of a
  convolution), its ``output_padding`` recovering the input size that the strided forward rounded away;
- ``silu_backward`` -> sigmoid arithmetic, without the in-place temporaries of the stock version;
- ``empty_permuted`` -> zeros (only ever a buffer that is overwritten).

GroupNorm is swapped for an equivalent module of elementary operations before tracing, so that its
backward is elementary too, and the encoder's variance is computed on columns padded to 16
(``EXPORT_VAR_WIDTH``, nets._var), so that no row's rounding depends on the batch it is in.

Half precision (``precision="float16"``): the denoiser and the encoder's trunk run in float16; the encoder's
mean and variance heads, the log-likelihood and so the division by the variance stay in float32, and
every graph keeps float32 inputs and outputs. An encoder's ``trunk_modules()`` says what may run in
float16: the half-UNet's down path (smooth SiLU activations), none of the ReLU ConvNet (see nets.py).
"""

from __future__ import annotations

import copy

import torch
import torch.nn as nn
from torch._decomp import core_aten_decompositions
from torch.func import functional_call, grad
from torch.fx.experimental.proxy_tensor import make_fx

from train.objective import log_q

aten = torch.ops.aten


def _convolution_backward(grad_output, input, weight, bias_sizes, stride, padding, dilation, transposed,
                          output_padding, groups, output_mask):
    """Input gradient of a convolution as a transposed convolution (weights are constants here)."""
    if transposed:
        raise NotImplementedError("the guidance export supports ordinary (not transposed) convolutions")
    grad_input = None
    if output_mask[0]:
        pad = []
        for i in range(weight.dim() - 2):
            full = ((grad_output.shape[2 + i] - 1) * stride[i] - 2 * padding[i]
                    + dilation[i] * (weight.shape[2 + i] - 1) + 1)
            pad.append(input.shape[2 + i] - full)
        grad_input = aten.convolution(grad_output, weight, None, stride, padding, dilation, True, pad, groups)
    return grad_input, None, None


def _silu_backward(grad_output, x):
    s = torch.sigmoid(x)
    return grad_output * s * (1 + x * (1 - s))


def _empty_permuted(size, physical_layout, dtype=None, layout=None, device=None, pin_memory=None):
    return torch.zeros(size, dtype=dtype, device=device)


def decomposition_table() -> dict:
    table = dict(core_aten_decompositions())
    table[aten.convolution_backward.default] = _convolution_backward
    table[aten.silu_backward.default] = _silu_backward
    table[aten.empty_permuted.default] = _empty_permuted
    return table


class PlainGroupNorm(nn.Module):
    """nn.GroupNorm written with elementary operations (same parameters, same results to rounding).

    The statistics are taken per channel over the spatial axes and then averaged over each group's channels
    on the small (B, C) tensor: mean_g = mean_c(mean_hw(x)), var_g = mean_c(mean_hw((x - mean_g)^2)), the
    two-pass variance (no cancellation when the mean is large). Every operation on the full-size tensor keeps
    its 4-d shape. The textbook form reshapes the activation to (B, G, C/G * H * W) instead, and a runtime
    that keeps convolution outputs channels-last (OpenVINO's CPU plugin) must then reorder each one to
    channels-first and back, around every GroupNorm: disks-small's guided step spent a third of its time in
    those reorders, and OpenVINO float32 ran at 0.93-1.06x onnxruntime; with this form 1.13-1.18x at batch 16
    and 1.05-1.12x at 64 (1.13-1.38x with the backend's poolings, backends/openvino.py), onnxruntime itself
    7-13% faster at 64 (benchmarks/RESULTS.md, issue 31).

    Every size but the batch is a concrete number in the reshapes: with ``-1`` (or ``x.shape``) the symbolic
    trace of the guidance spent its time in sympy, simplifying the floor division that infers the size
    (celeba64's encoder: unfinished after 11 minutes, against 5 s with the sizes written out; benchmarks/RESULTS.md)."""

    def __init__(self, gn: nn.GroupNorm):
        super().__init__()
        self.groups, self.eps, self.channels = gn.num_groups, gn.eps, gn.num_channels
        self.weight, self.bias = gn.weight, gn.bias

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, C, G = x.shape[0], self.channels, self.groups
        axes = tuple(range(2, x.dim()))  # the spatial axes (none for a (B, C) input)
        one = (1,) * (x.dim() - 2)

        def channel_mean(t: torch.Tensor) -> torch.Tensor:  # (B, C, ...) -> (B, C, 1..)
            return t.mean(axes, keepdim=True) if axes else t

        def group_mean(per_channel: torch.Tensor) -> torch.Tensor:  # (B, C, 1..) -> its group's mean, per channel
            m = per_channel.reshape(B, G, C // G).mean(-1, keepdim=True)
            return m.expand(B, G, C // G).reshape(B, C, *one)

        d = x - group_mean(channel_mean(x))
        var = group_mean(channel_mean(d * d))
        scale = self.weight.reshape(1, C, *one) / torch.sqrt(var + self.eps)
        return d * scale + self.bias.reshape(1, C, *one)


EXPORT_VAR_WIDTH = 16  # a multiple of every CPU vector width in floats (SSE 4, AVX 8, AVX-512 16)


def export_copy(module: nn.Module) -> nn.Module:
    """A frozen copy in eval mode with GroupNorm replaced by PlainGroupNorm and the encoder's variance computed
    on padded columns (``var_width``, see nets._var: batch-invariant rounding in onnxruntime)."""
    m = copy.deepcopy(module).eval().requires_grad_(False)
    for mod in m.modules():
        if hasattr(mod, "var_width"):
            mod.var_width = EXPORT_VAR_WIDTH

    def swap(parent: nn.Module) -> None:
        for name, child in parent.named_children():
            if isinstance(child, nn.GroupNorm):
                setattr(parent, name, PlainGroupNorm(child))
            else:
                swap(child)

    swap(m)
    return m


class MixedPrecisionEncoder(nn.Module):
    """The encoder's trunk in float16, its mean and variance heads (and so the guidance's 1/var) in float32."""

    def __init__(self, encoder: nn.Module):
        super().__init__()
        self.enc = encoder
        self.half_trunk = bool(encoder.trunk_modules())  # False: the whole encoder stays float32
        for m in encoder.trunk_modules():
            m.half()

    def forward(self, x: torch.Tensor):
        if not self.half_trunk:
            return self.enc(x)
        h = self.enc.trunk(x.half()).float()
        return self.enc.heads(h)


class HalfPrecisionDenoiser(nn.Module):
    """The denoiser in float16 with float32 input and output."""

    def __init__(self, denoiser: nn.Module):
        super().__init__()
        self.net = denoiser.half()

    def forward(self, x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return self.net(x_t.half(), t).float()


def prepare_encoder(encoder: nn.Module, precision: str) -> nn.Module:
    enc = export_copy(encoder)
    return MixedPrecisionEncoder(enc) if precision == "float16" else enc


def prepare_denoiser(denoiser: nn.Module, precision: str) -> nn.Module:
    den = export_copy(denoiser)
    return HalfPrecisionDenoiser(den) if precision == "float16" else den


class EncoderGraph(nn.Module):
    def __init__(self, encoder: nn.Module, precision: str = "float32"):
        super().__init__()
        self.encoder = prepare_encoder(encoder, precision)

    def forward(self, x):
        mu, var = self.encoder(x)
        return mu, var


class DenoiserGraph(nn.Module):
    def __init__(self, denoiser: nn.Module, precision: str = "float32"):
        super().__init__()
        self.denoiser = prepare_denoiser(denoiser, precision)

    def forward(self, x_t, t):
        return self.denoiser(x_t, t)


class GuidanceGraph(nn.Module):
    """g(x_t, z, mask) = grad_{x_t} sum_d mask_d log N(z_d; mu_d(x_t), var_d(x_t)), traced to plain ops."""

    def __init__(self, encoder: nn.Module, example_x: torch.Tensor, precision: str = "float32"):
        super().__init__()
        enc = prepare_encoder(encoder, precision)
        params = {k: v.detach() for k, v in enc.named_parameters()}
        buffers = {k: v.detach() for k, v in enc.named_buffers()}
        self._pnames, self._bnames = list(params), list(buffers)
        for i, v in enumerate(params.values()):
            self.register_buffer(f"p{i}", v.clone())
        for i, v in enumerate(buffers.values()):
            self.register_buffer(f"b{i}", v.clone())

        def log_lik(x, z, mask, p, b):
            mu, var = functional_call(enc, (p, b), (x,))
            return log_q(z, mu, var, mask).sum()

        def g(x, z, mask, p, b):
            return grad(log_lik)(x, z, mask, p, b)

        B = max(2, example_x.shape[0])
        x = example_x[:1].expand(B, *example_x.shape[1:]).contiguous()
        D = enc(x[:1])[0].shape[1]
        z, mask = torch.zeros(B, D), torch.ones(B, D)
        self.traced = make_fx(g, tracing_mode="symbolic", decomposition_table=decomposition_table())(
            x, z, mask, params, buffers)

    def forward(self, x_t, z, mask):
        p = {k: getattr(self, f"p{i}") for i, k in enumerate(self._pnames)}
        b = {k: getattr(self, f"b{i}") for i, k in enumerate(self._bnames)}
        return self.traced(x_t, z, mask, p, b)
