"""The SAMI objective (paper Eq. 10) and its pieces: exact guidance, guided noise estimate, KL, schedules.

    g(x_t, z)      = grad_{x_t} log q_phi(z | x_t)                          (exact, autograd)
    eps_hat        = eps_theta(x_t, t) - s * sqrt(1 - abar_t) * g(x_t, z)
    loss           = E[ lambda_t * ||eps - eps_hat||^2 ] + beta * KL(q_phi(z | x_0) || p(z))

with the paper's prior p = N(0, I), or a factorised non-Gaussian one (``prior``: see log_prior), and the KL
optionally with a per-dimension floor (``kl_free_bits``: see kl_term).

with z ~ q_phi(z | x_0) by reparameterisation. Training differentiates g with respect to phi, so the
guidance is computed with create_graph=True (double backward through the encoder).
"""

from __future__ import annotations

import math

import torch

from sami_reference.guidance import LOG_2PI, guidance, guided_eps, log_q  # noqa: F401 (re-exported)


PRIORS = ("gaussian", "smooth-uniform", "logistic")


def log_prior(z: torch.Tensor, kind: str, width: float = 3**0.5, smooth: float = 0.1) -> torch.Tensor:
    """log p(z_d) of each element of z under a factorised prior of unit-scale marginals:

    - 'gaussian': N(0, 1), the paper's;
    - 'smooth-uniform': U(-width, width) convolved with N(0, smooth^2), i.e. p(z) = (Phi((width - z) / smooth)
      - Phi((-width - z) / smooth)) / (2 width): flat inside the box, a Gaussian wall outside it. A square of
      factors can map onto the box without being squeezed at its rim, and rotating the code changes the KL, so
      the prior prefers axis-aligned factors (width sqrt(3): variance 1 as smooth -> 0);
    - 'logistic': the logistic density of variance 1 (scale sqrt(3) / pi): tails linear in log density.
    """
    if kind == "gaussian":
        return -0.5 * (z**2 + LOG_2PI)
    if kind == "smooth-uniform":
        a = abs(z)  # symmetric; log(Phi(u) - Phi(v)) with v < u, stable far outside the box
        u, v = (width - a) / smooth, (-width - a) / smooth
        lu, lv = torch.special.log_ndtr(u), torch.special.log_ndtr(v)
        return lu + torch.log1p(-torch.exp(lv - lu)) - math.log(2 * width)
    if kind == "logistic":
        s = 3**0.5 / math.pi
        y = z / s
        return -y - 2 * torch.nn.functional.softplus(-y) - math.log(s)
    raise ValueError(f"unknown prior {kind!r}; expected one of {', '.join(PRIORS)}")


def kl_std_normal(mu: torch.Tensor, var: torch.Tensor) -> torch.Tensor:
    """KL(N(mu, diag var) || N(0, I)) per sample [B] (kl_per_dim's closed form, summed over dimensions)."""
    return kl_per_dim(mu, var).sum(dim=1)


def kl_per_dim(mu: torch.Tensor, var: torch.Tensor, z: torch.Tensor | None = None, prior: str = "gaussian",
               width: float = 3**0.5, smooth: float = 0.1) -> torch.Tensor:
    """KL(q(z_d | x) || p(z_d)) per sample and dimension [B, D]: closed form for the Gaussian prior; otherwise
    the one-sample Monte Carlo estimate -H(q_d) - log p(z_d) at the reparameterised draw z (unbiased, and
    differentiable through z)."""
    if prior == "gaussian":
        return 0.5 * (var + mu**2 - 1.0 - torch.log(var))
    if z is None:
        raise ValueError(f"the {prior} prior's KL is a Monte Carlo estimate: it needs the draw z")
    neg_entropy = -0.5 * (torch.log(var) + LOG_2PI + 1.0)
    return neg_entropy - log_prior(z, prior, width, smooth)


def kl_term(kl: torch.Tensor, free_bits: float = 0.0) -> torch.Tensor:
    """The KL term of the loss from the per-sample, per-dimension KL [B, D] (kl_per_dim): sum_d max(free_bits,
    mean_b KL_d) (Kingma et al. 2016's free bits, per latent dimension over the minibatch); with free_bits 0
    it is the plain mean_b KL(q(z | x_0) || p(z))."""
    kl_d = kl.mean(0)
    if free_bits > 0:
        kl_d = torch.clamp(kl_d, min=free_bits)
    return kl_d.sum()


def kl_weight(step: int, total: int, final: float, start_ratio: float, frac: float) -> float:
    """beta annealed exponentially from start_ratio * final to final over the first ``frac`` of training."""
    if frac <= 0 or start_ratio >= 1:
        return final
    p = min(1.0, step / max(1.0, frac * total))
    return final * start_ratio ** (1.0 - p)


def sample_t(n: int, T: int, power: float, generator: torch.Generator | None = None) -> torch.Tensor:
    """t = floor(T * u^(1/power)): uniform for power 1, density ~ t^(power-1) (towards high noise) above 1."""
    u = torch.rand(n, generator=generator, dtype=torch.float64)
    return (T * u ** (1.0 / power)).floor().clamp(0, T - 1).to(torch.int64)


LOSS_WEIGHTS = ("none", "snr-trunc", "inv-snr-trunc")


def loss_weight(kind: str, abar_t: torch.Tensor) -> torch.Tensor:
    """lambda_t, with SNR_t = abar_t / (1 - abar_t):

    - 'none': 1 (the 'simple' eps loss);
    - 'snr-trunc': min(1, SNR_t), de-emphasises the noisiest levels;
    - 'inv-snr-trunc': max(1, 1 / SNR_t), the x_0-space error where it exceeds the eps-space one: emphasises
      the noisiest levels, where the denoiser alone is most uncertain and the latent carries the most.
    """
    snr = abar_t / (1 - abar_t)
    if kind == "none":
        return torch.ones_like(abar_t)
    if kind == "snr-trunc":
        return torch.clamp(snr, max=1.0)
    if kind == "inv-snr-trunc":
        return torch.clamp(1 / snr, min=1.0)
    raise ValueError(f"unknown loss weight {kind!r}; expected one of {LOSS_WEIGHTS}")


def sami_loss(model, x0: torch.Tensor, abar: torch.Tensor, cfg, beta: float, generator: torch.Generator):
    """One minibatch of the SAMI objective. Returns (loss, stats) with stats for logging.

    ``abar`` is the float64 table [T] on the model's device; ``generator`` (CPU) draws t, eps and the
    reparameterisation noise so that a resumed run is identical to an uninterrupted one.
    """
    B, dev = x0.shape[0], x0.device
    t = sample_t(B, cfg.T, cfg.t_power, generator).to(dev)
    eps = torch.randn(x0.shape, generator=generator).to(dev)
    n_z = torch.randn((B, cfg.latent_dim), generator=generator).to(dev)
    a = abar[t].to(x0.dtype)
    x_t = a.sqrt().reshape(-1, 1, 1, 1) * x0 + (1 - a).sqrt().reshape(-1, 1, 1, 1) * eps

    mu0, var0 = model.encoder(x0)
    z = mu0 + var0.sqrt() * n_z
    eps_hat = guided_eps(model.denoiser, model.encoder, x_t, t, z, (1 - a).sqrt(), cfg.guidance_scale,
                         create_graph=True)
    lam = loss_weight(cfg.loss_weight, a)
    rec = (lam * ((eps - eps_hat) ** 2).flatten(1).sum(1)).mean()
    kl_d = kl_per_dim(mu0, var0, z, cfg.prior, cfg.prior_width, cfg.prior_smooth)
    kl = kl_d.sum(1).mean()
    loss = rec + beta * kl_term(kl_d, cfg.kl_free_bits)
    stats = {"loss": loss.item(), "rec": rec.item(), "kl": kl.item(), "beta": beta,
             "var0": var0.mean().item()}
    return loss, stats
