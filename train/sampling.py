"""Guided DDPM / DDIM sampling in PyTorch, for sample grids and evaluation during training.

The coefficients come from ``sami_rt.sampling.schedule.step_coefficients`` (the same float64 arrays the runtime
uses); the update is x_s = c_x * x_t + c_eps * eps_hat + sigma * noise.
"""

from __future__ import annotations

import numpy as np
import torch

from sami_rt.sampling.schedule import FULL_INTERVAL, guidance_weights, respace, step_coefficients, step_scale
from train.objective import guided_eps


@torch.no_grad()
def sample(model, abar: np.ndarray, shape, z=None, steps: int = 100, eta: float = 1.0, scale: float = 1.0,
           mask=None, generator: torch.Generator | None = None, batch: int = 256,
           x_init: torch.Tensor | None = None, noise=None, interval=FULL_INTERVAL) -> torch.Tensor:
    """Draw images [N, C, H, W]; ``z`` [N, D] guides (None: unconditional, eps_theta alone); ``x_init``
    [N, C, H, W] the starting noise x_T and ``noise(i, rows)`` the noise of step i for the images ``rows`` (a
    range of indices into the N) as a tensor [len(rows), C, H, W] (default for both: drawn from ``generator``).
    With both, another sampler's noise drives this loop: tests/test_sampling.py runs it against sami_rt's.
    ``interval`` (lo, hi): the noise levels t / (T - 1) guided at ``scale``; the others at 1 (the exact model)."""
    N = shape[0]
    outs = []
    for lo in range(0, N, batch):
        n = min(batch, N - lo)
        outs.append(_sample_batch(model, abar, (n, *shape[1:]), None if z is None else z[lo : lo + n], steps, eta,
                                  scale, None if mask is None else mask[lo : lo + n], generator,
                                  None if x_init is None else x_init[lo : lo + n],
                                  None if noise is None else (lambda i, lo=lo, n=n: noise(i, range(lo, lo + n))),
                                  interval))
    return torch.cat(outs)


def _sample_batch(model, abar, shape, z, steps, eta, scale, mask, generator, x_init=None, noise=None,
                  interval=FULL_INTERVAL):
    dev = next(model.parameters()).device
    T = len(abar)
    co = step_coefficients(abar, respace(T, steps), eta)
    w = guidance_weights(co["t"], T, interval)
    x = (torch.randn(shape, generator=generator) if x_init is None else x_init.clone()).to(dev)
    for i, t in enumerate(co["t"]):
        tt = torch.full((shape[0],), int(t), dtype=torch.int64, device=dev)
        if z is None:
            eps = model.denoiser(x, tt)
        else:
            s1m = torch.full((shape[0],), float(co["sqrt_1m_abar"][i]), device=dev)
            eps = guided_eps(model.denoiser, model.encoder, x, tt, z.to(dev), s1m, step_scale(scale, float(w[i])), mask)
        x = float(co["c_x"][i]) * x + float(co["c_eps"][i]) * eps
        if co["sigma"][i] > 0:
            e = torch.randn(shape, generator=generator) if noise is None else noise(i)
            x = x + float(co["sigma"][i]) * e.to(dev)
    return x.clamp(-1, 1)


def save_grid(images: torch.Tensor, path, nrow: int = 8) -> None:
    """Write images [N, C, H, W] in [-1, 1] as one PNG grid (atomically)."""
    from PIL import Image

    from sami_rt.media.images import from_model, grid
    from sami_rt.media.files import atomic_path

    g = grid(from_model(images.detach().cpu().numpy()), nrow)  # (rows, cols, C) uint8
    img = Image.fromarray(g[:, :, 0] if g.shape[2] == 1 else g)
    with atomic_path(path) as tmp:
        img.save(tmp, format="PNG")
