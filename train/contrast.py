"""An augmentation-invariance term on the encoder's code (``--aux-contrast W``; 0, the default, is the paper's
objective alone).

Two randomly augmented views of each training image are encoded; a projection head maps each posterior mean
(or, with ``--aux-contrast-input sample``, a reparameterised posterior sample) to a vector, and the InfoNCE loss (SimCLR's NT-Xent, Chen et al. 2020) asks every view to pick its partner
out of the other 2B - 1 views of the batch by cosine similarity at temperature ``aux_temperature``. The code
then keeps what survives the augmentations (what an item is) and the diffusion term keeps what the denoiser
needs from it; the head is discarded after training (never exported: the code is the posterior mean).

The augmentations are those of a centred, grey item on a black ground: a zoom of 0.85-1.15, a rotation of up
to 10 degrees, a shift of up to 3 pixels, a left-right flip with probability 1/2 and an intensity gain of
0.7-1.3 (on [0, 1] intensities: the ground stays black). Their parameters are drawn from the run's CPU
generator, so a resumed run draws the same views.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

ZOOM, ROTATE_DEG, SHIFT_PX, GAIN = 0.15, 10.0, 3.0, 0.3


def augment_params(n: int, generator: torch.Generator) -> torch.Tensor:
    """[n, 6] uniform draws in [0, 1): the zoom, rotation, shift x, shift y, flip and gain come from them."""
    return torch.rand(n, 6, generator=generator)


def augment(x: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """x [B, C, H, W] in [-1, 1] (ground -1) moved by the draws u [B, 6] (``augment_params``)."""
    B, _, H, W = x.shape
    u = u.to(device=x.device, dtype=x.dtype)
    zoom = 1 + ZOOM * (2 * u[:, 0] - 1)
    ang = math.radians(ROTATE_DEG) * (2 * u[:, 1] - 1)
    # a shift of the content by (dx, dy) pixels samples the input at (x - dx, y - dy)
    tx, ty = -SHIFT_PX * (2 * u[:, 2] - 1) * 2 / W, -SHIFT_PX * (2 * u[:, 3] - 1) * 2 / H
    flip = torch.where(u[:, 4] < 0.5, -1.0, 1.0).to(x.dtype)
    gain = 1 + GAIN * (2 * u[:, 5] - 1)
    # affine_grid maps output coordinates to input ones: the inverse of a zoom by `zoom` is 1 / zoom
    c, s = torch.cos(ang) / zoom, torch.sin(ang) / zoom
    theta = torch.stack([torch.stack([c * flip, -s, tx], 1), torch.stack([s * flip, c, ty], 1)], 1)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    x01 = F.grid_sample((x + 1) / 2, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    return (x01 * gain.reshape(-1, 1, 1, 1)).clamp(0, 1) * 2 - 1


class ProjectionHead(nn.Module):
    """latent -> 256 -> 128 (ReLU between), the vectors InfoNCE compares."""

    def __init__(self, latent_dim: int, hidden: int = 256, out: int = 128):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(latent_dim, hidden), nn.ReLU(), nn.Linear(hidden, out))

    def forward(self, mu: torch.Tensor) -> torch.Tensor:
        return self.net(mu)


def info_nce(h1: torch.Tensor, h2: torch.Tensor, temperature: float) -> torch.Tensor:
    """NT-Xent of the pairs (h1[i], h2[i]): the mean over all 2B views of -log softmax of the partner's cosine
    similarity / temperature against every other view of the batch."""
    B = h1.shape[0]
    h = F.normalize(torch.cat([h1, h2]), dim=1)
    sim = h @ h.T / temperature
    sim = sim.masked_fill(torch.eye(2 * B, dtype=torch.bool, device=h.device), float("-inf"))
    target = torch.cat([torch.arange(B, 2 * B), torch.arange(B)]).to(h.device)
    return F.cross_entropy(sim, target)


INPUTS = ("mean", "sample")


def contrast_loss(encoder, head: ProjectionHead, x0: torch.Tensor, temperature: float,
                  generator: torch.Generator, on: str = "mean") -> torch.Tensor:
    """InfoNCE between two augmented views of each image of x0, compared through their posterior means
    (``on="mean"``) or reparameterised posterior samples (``"sample"``: a wide posterior then blurs the
    comparison, so the term also keeps the posterior narrow)."""
    if on not in INPUTS:
        raise ValueError(f"unknown aux_contrast_input {on!r}; expected one of {', '.join(INPUTS)}")
    B = x0.shape[0]
    u = augment_params(2 * B, generator)
    views = augment(torch.cat([x0, x0]), u)
    mu, var = encoder(views)
    if on == "sample":
        mu = mu + var.sqrt() * torch.randn(mu.shape, generator=generator).to(mu.device)
    h = head(mu)
    return info_nce(h[:B], h[B:], temperature)
