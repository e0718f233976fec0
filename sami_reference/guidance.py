"""The guidance in PyTorch, exactly: g = grad_{x_t} log q_phi(z | x_t) by autograd, and the guided noise
estimate eps_hat = eps_theta(x_t, t) - s * sqrt(1 - abar_t) * g. Used by training (with create_graph for the
double backward), by export (as the reference the graphs are validated against) and by ``sami-rt bench``
(as the PyTorch eager baseline)."""

from __future__ import annotations

import math

import torch

LOG_2PI = math.log(2 * math.pi)


def log_q(z: torch.Tensor, mu: torch.Tensor, var: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """log N(z; mu, diag var) per sample [B], summed over the latent dimensions that ``mask`` selects."""
    ll = -0.5 * ((z - mu) ** 2 / var + torch.log(var) + LOG_2PI)  # (B, D)
    if mask is not None:
        ll = ll * mask
    return ll.sum(dim=1)


def guidance(encoder, x_t: torch.Tensor, z: torch.Tensor, mask: torch.Tensor | None = None,
             create_graph: bool = False) -> torch.Tensor:
    """g = grad_{x_t} log q_phi(z | x_t) [B, C, H, W], exact; differentiable in phi when create_graph."""
    with torch.enable_grad():
        x = x_t if x_t.requires_grad else x_t.detach().requires_grad_(True)
        mu, var = encoder(x)
        (g,) = torch.autograd.grad(log_q(z, mu, var, mask).sum(), x, create_graph=create_graph)
    return g


def guided_eps(denoiser, encoder, x_t, t, z, sqrt_1m_abar_t, scale=1.0, mask=None, create_graph=False):
    """eps_hat(x_t, t, z) = eps_theta(x_t, t) - s * sqrt(1 - abar_t) * g(x_t, z)."""
    eps = denoiser(x_t, t)
    g = guidance(encoder, x_t, z, mask, create_graph)
    s = torch.as_tensor(scale, dtype=x_t.dtype, device=x_t.device).reshape(-1, 1, 1, 1)
    return eps - s * sqrt_1m_abar_t.reshape(-1, 1, 1, 1) * g
