"""VAE and beta-VAE baselines with SAMI's encoder family, trained by the same loop on the same data.

``--model vae`` / ``--model beta-vae`` (Config.model) replace the diffusion decoder by a convolutional one
that mirrors the ConvNet encoder (a linear layer to the encoder's last feature map, then stride-2 4x4
transposed convolutions) and the SAMI objective by the negative ELBO

    loss = mean_b [ -log p(x_0 | z) ] + beta * mean_b KL(q(z | x_0) || N(0, I)),   z = mu + sqrt(var) n,

with ``beta`` = 1 for the VAE and ``vae_beta`` for the beta-VAE (Higgins et al. 2017), annealed like SAMI's
KL weight. The likelihood (``vae_likelihood``) is Bernoulli on pixels mapped to [0, 1] (binary data such as
dSprites) or Gaussian with a fixed standard deviation ``vae_sigma`` in the [-1, 1] pixel scale:
-log p = sum_pixels (x - x_hat)^2 / (2 sigma^2) + const (the constant is left out).
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from sami_reference.nets import build_encoder

MODELS = ("sami", "vae", "beta-vae")
LIKELIHOODS = ("gaussian", "bernoulli")


class ConvDecoder(nn.Module):
    """z [B, D] -> image [B, C, H, W] (mean, or logits for a Bernoulli likelihood)."""

    def __init__(self, channels=1, size=32, latent_dim=3, conv=(32, 64), hidden=0):
        super().__init__()
        self.c0, self.s0 = conv[-1], size // 2 ** len(conv)
        n = self.c0 * self.s0**2
        self.fc = nn.Sequential(nn.Linear(latent_dim, hidden), nn.ReLU(), nn.Linear(hidden, n), nn.ReLU()) if hidden \
            else nn.Sequential(nn.Linear(latent_dim, n), nn.ReLU())
        layers, chans = [], list(conv[::-1]) + [channels]
        for i, (cin, cout) in enumerate(zip(chans[:-1], chans[1:])):
            layers.append(nn.ConvTranspose2d(cin, cout, 4, stride=2, padding=1))
            if i < len(chans) - 2:
                layers.append(nn.ReLU())
        self.net = nn.Sequential(*layers)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(self.fc(z).reshape(-1, self.c0, self.s0, self.s0))


class VAE(nn.Module):
    """The encoder of a SAMI configuration with a convolutional decoder."""

    def __init__(self, cfg):
        super().__init__()
        if cfg.encoder != "convnet":
            raise ValueError(f"--model {cfg.model} needs --encoder convnet (its decoder mirrors the ConvNet)")
        if cfg.vae_likelihood not in LIKELIHOODS:
            raise ValueError(f"unknown likelihood {cfg.vae_likelihood!r}; expected one of {LIKELIHOODS}")
        self.encoder = build_encoder(cfg)
        self.decoder = ConvDecoder(cfg.channels, cfg.image_size, cfg.latent_dim, cfg.enc_channels, cfg.enc_hidden)
        self.likelihood, self.sigma = cfg.vae_likelihood, cfg.vae_sigma

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Images in [-1, 1]: the Gaussian mean clamped, or 2 sigmoid(logits) - 1."""
        out = self.decoder(z)
        return (2 * torch.sigmoid(out) - 1) if self.likelihood == "bernoulli" else out.clamp(-1, 1)

    def nll(self, x0: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """-log p(x_0 | z) per image [B] (Gaussian without its constant)."""
        out = self.decoder(z)
        if self.likelihood == "bernoulli":
            return F.binary_cross_entropy_with_logits(out, (x0 + 1) / 2, reduction="none").flatten(1).sum(1)
        return ((x0 - out) ** 2).flatten(1).sum(1) / (2 * self.sigma**2)


def vae_beta(cfg) -> float:
    """The final KL weight of a baseline: 1 for the VAE (the ELBO), ``vae_beta`` for the beta-VAE."""
    return 1.0 if cfg.model == "vae" else float(cfg.vae_beta)


def vae_loss(model: VAE, x0: torch.Tensor, cfg, beta: float, generator: torch.Generator):
    """One minibatch of the negative ELBO (beta-weighted KL). Returns (loss, stats) like sami_loss."""
    from train.objective import kl_per_dim, kl_term

    mu, var = model.encoder(x0)
    n = torch.randn(mu.shape, generator=generator).to(x0.device)
    z = mu + var.sqrt() * n
    rec = model.nll(x0, z).mean()
    kl_d = kl_per_dim(mu, var, z, cfg.prior, cfg.prior_width, cfg.prior_smooth)
    loss = rec + beta * kl_term(kl_d, cfg.kl_free_bits)
    kl = kl_d.sum(1).mean()
    return loss, {"loss": loss.item(), "rec": rec.item(), "kl": kl.item(), "beta": beta, "var0": var.mean().item()}
