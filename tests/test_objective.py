"""The SAMI objective against its twins: finite differences, a linear-Gaussian closed form."""

import math
from types import SimpleNamespace

import pytest
import torch

from tests.conftest import tiny_config
from train.nets import ConvEncoder, HalfUNetEncoder
from train.objective import (PRIORS, guidance, kl_per_dim, kl_std_normal, kl_term, kl_weight, log_prior, log_q,
                             sami_loss, sample_t)


@pytest.mark.parametrize("make", [
    lambda: ConvEncoder(1, 16, 3, (4, 8), hidden=16, bias=False),
    lambda: ConvEncoder(1, 16, 3, (4, 8), hidden=0, bias=True, pool="spatial-softmax"),
    lambda: HalfUNetEncoder(3, 16, 5, ch=8, mult=(1, 2), res_blocks=1, attention=(8,)),
])
@pytest.mark.parametrize("masked", [False, True])
def test_guidance_equals_finite_differences_of_log_q(make, masked):
    enc = make().double()
    x = torch.randn(2, 1 if isinstance(enc, ConvEncoder) else 3, 16, 16, dtype=torch.float64)
    D = enc(x)[0].shape[1]
    z = torch.randn(2, D, dtype=torch.float64)
    mask = (torch.rand(2, D) > 0.5).double() if masked else None
    g = guidance(enc, x, z, mask)
    h = 1e-6
    for _ in range(6):  # random coordinates
        b, c, i, j = (torch.randint(n, ()).item() for n in x.shape)
        xp, xm = x.clone(), x.clone()
        xp[b, c, i, j] += h
        xm[b, c, i, j] -= h
        fd = (log_q(z, *enc(xp), mask)[b] - log_q(z, *enc(xm), mask)[b]) / (2 * h)
        assert abs(fd.item() - g[b, c, i, j].item()) <= 1e-6 * max(1.0, abs(fd.item()))


def test_masked_guidance_ignores_unselected_dimensions():
    enc = ConvEncoder(1, 16, 4, (4, 8), hidden=0).double()
    x = torch.randn(3, 1, 16, 16, dtype=torch.float64)
    z = torch.randn(3, 4, dtype=torch.float64)
    mask = torch.tensor([[1.0, 0, 1, 0]] * 3, dtype=torch.float64)
    z2 = z.clone()
    z2[:, 1] += 5.0  # change only masked-out dimensions
    z2[:, 3] -= 3.0
    torch.testing.assert_close(guidance(enc, x, z, mask), guidance(enc, x, z2, mask))
    assert not torch.allclose(guidance(enc, x, z), guidance(enc, x, z2))


class LinearEncoder(torch.nn.Module):
    """mu = a * x (per pixel, D = pixels), var = v (constant)."""

    def __init__(self, a, v):
        super().__init__()
        self.a, self.v = a, v

    def forward(self, x):
        mu = self.a * x.flatten(1)
        return mu, torch.full_like(mu, self.v)


class ExactGaussianDenoiser(torch.nn.Module):
    """E[eps | x_t] for x_0 ~ N(0, s^2 I): sqrt(1 - abar) x_t / (abar s^2 + 1 - abar)."""

    def __init__(self, abar, s2):
        super().__init__()
        self.abar, self.s2 = abar, s2

    def forward(self, x_t, t):
        a = self.abar[t].reshape(-1, 1, 1, 1).to(x_t.dtype)
        return (1 - a).sqrt() * x_t / (a * self.s2 + 1 - a)


def test_loss_matches_the_linear_gaussian_closed_form(fresh_seed):
    """x0 ~ N(0, s2), z = a x0 + sqrt(v) n, exact denoiser: E[loss] per pixel has a closed form."""
    g = torch.Generator().manual_seed(fresh_seed)
    s2, a_enc, v, abar_t, beta = 0.7, 1.3, 0.4, 0.35, 0.05
    abar = torch.tensor([abar_t], dtype=torch.float64)
    model = SimpleNamespace(encoder=LinearEncoder(a_enc, v), denoiser=ExactGaussianDenoiser(abar, s2))
    cfg = SimpleNamespace(T=1, t_power=1.0, latent_dim=4, guidance_scale=1.0, loss_weight="none", kl_free_bits=0.0,
                          prior="gaussian", prior_width=3**0.5, prior_smooth=0.1)
    B = 200_000
    x0 = math.sqrt(s2) * torch.randn(B, 1, 2, 2, generator=g, dtype=torch.float64)
    loss, stats = sami_loss(model, x0, abar, cfg, beta, g)
    # e = eps - eps*(x_t) + sigma * a (z - a x_t) / v, linear in (x0, eps, n) per pixel
    al, sg = math.sqrt(abar_t), math.sqrt(1 - abar_t)
    k = sg / (abar_t * s2 + 1 - abar_t)  # eps* = k x_t
    c_x0 = -k * al + sg * a_enc * (a_enc - a_enc * al) / v
    c_eps = 1 - k * sg - sg * a_enc * a_enc * sg / v
    c_n = sg * a_enc * math.sqrt(v) / v
    rec = 4 * (c_x0**2 * s2 + c_eps**2 + c_n**2)
    kl = 4 * 0.5 * (v + a_enc**2 * s2 - 1 - math.log(v))
    assert stats["rec"] == pytest.approx(rec, rel=0.01)
    assert stats["kl"] == pytest.approx(kl, rel=0.01)
    assert loss.item() == pytest.approx(rec + beta * kl, rel=0.01)


def test_loss_double_backward_reaches_the_encoder():
    cfg = tiny_config()
    from train.nets import SAMI

    model = SAMI(cfg)
    abar = torch.linspace(0.99, 0.05, cfg.T, dtype=torch.float64)
    x0 = torch.rand(4, 1, 16, 16) * 2 - 1
    loss, _ = sami_loss(model, x0, abar, cfg.replace(kl_weight=0.0), beta=0.0, generator=torch.Generator().manual_seed(3))
    loss.backward()
    # with beta = 0 the encoder learns only through the guidance term, i.e. through the double backward
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.encoder.parameters())


def test_kl_of_standard_normal_is_zero_and_positive_elsewhere():
    mu, var = torch.zeros(2, 3), torch.ones(2, 3)
    assert torch.allclose(kl_std_normal(mu, var), torch.zeros(2))
    assert (kl_std_normal(torch.randn(2, 3), torch.rand(2, 3) + 0.1) > 0).all()


def test_kl_weight_anneals_exponentially_to_its_final_value():
    w = [kl_weight(s, 1000, 1e-3, 1e-4, 0.5) for s in (0, 250, 500, 900)]
    assert w[0] == pytest.approx(1e-7) and w[1] == pytest.approx(1e-5) and w[2] == w[3] == pytest.approx(1e-3)


def test_timestep_bias_towards_high_noise():
    g = torch.Generator().manual_seed(0)
    u = sample_t(100_000, 400, 1.0, g).double()
    b = sample_t(100_000, 400, 3.0, g).double()
    assert u.min() == 0 and u.max() == 399 and abs(u.mean().item() - 199.5) < 3
    assert abs(b.mean().item() - 0.75 * 400) < 3  # density ~ t^2: mean 3/4 T


def test_free_bits_floor_each_dimensions_batch_mean_kl(fresh_seed):
    """kl_term = sum_d max(floor, mean_b KL_d); without a floor it is the mean of kl_std_normal."""
    g = torch.Generator().manual_seed(fresh_seed)
    mu = torch.randn(64, 5, generator=g, dtype=torch.float64)
    mu[:, :2] *= 0.01  # two nearly collapsed dimensions (KL ~ 0)
    var = torch.rand(64, 5, generator=g, dtype=torch.float64) * 0.5 + 0.5
    var[:, :2] = 1.0
    per_dim = (0.5 * (var + mu**2 - 1 - var.log())).mean(0)
    assert kl_term(kl_per_dim(mu, var)).item() == pytest.approx(kl_std_normal(mu, var).mean().item(), rel=1e-12)
    floor = 0.1
    assert (per_dim[:2] < floor).all() and (per_dim[2:] > floor).all()
    want = 2 * floor + per_dim[2:].sum().item()
    assert kl_term(kl_per_dim(mu, var), floor).item() == pytest.approx(want, rel=1e-12)
    # the floored dimensions get no gradient from the KL: free bits let them carry information at no cost
    mu.requires_grad_(True)
    kl_term(kl_per_dim(mu, var), floor).backward()
    assert mu.grad[:, :2].abs().max() == 0 and mu.grad[:, 2:].abs().max() > 0


@pytest.mark.parametrize("prior", PRIORS)
def test_each_prior_is_a_density_of_unit_variance(prior):
    """The trapezoid integral of exp(log_prior) over a wide grid is 1, the mean 0 and the variance 1 (the
    smooth-uniform box's: width^2 / 3 + smooth^2)."""
    z = torch.linspace(-12, 12, 200_001, dtype=torch.float64)
    p = log_prior(z, prior).exp()
    mass = torch.trapezoid(p, z).item()
    var = torch.trapezoid(p * z**2, z).item()
    assert mass == pytest.approx(1.0, abs=1e-6)
    assert torch.trapezoid(p * z, z).item() == pytest.approx(0.0, abs=1e-9)
    want = 1.0 + (0.1**2 if prior == "smooth-uniform" else 0.0)
    assert var == pytest.approx(want, rel=1e-4)


def test_smooth_uniform_prior_is_flat_inside_and_finite_far_outside():
    a, s = 3**0.5, 0.1
    inside = log_prior(torch.tensor([-1.0, 0.0, 0.9], dtype=torch.float64), "smooth-uniform", a, s)
    assert torch.allclose(inside, torch.full((3,), -math.log(2 * a), dtype=torch.float64), atol=1e-12)
    far = torch.tensor([5.0, -40.0], dtype=torch.float64, requires_grad=True)
    lp = log_prior(far, "smooth-uniform", a, s)
    # far outside, the smoothed box's edge is a Gaussian tail: log p ~ -(|z| - a)^2 / (2 s^2)
    tail = -((far.detach().abs() - a) ** 2) / (2 * s**2)
    assert torch.isfinite(lp).all() and ((lp - tail).abs() < 2 * (far.detach().abs() - a).log() + 10).all()
    lp.sum().backward()
    assert torch.isfinite(far.grad).all() and far.grad[0] < 0 < far.grad[1]


@pytest.mark.parametrize("prior", PRIORS)
def test_monte_carlo_kl_matches_numerical_integration(prior, fresh_seed):
    """kl_per_dim's estimate (closed form for the Gaussian) averaged over many draws equals the KL integrated
    on a grid, for random posteriors; for the Gaussian prior the Monte Carlo form agrees with the closed one."""
    g = torch.Generator().manual_seed(fresh_seed)
    mu = torch.randn(4, generator=g, dtype=torch.float64) * 1.5
    var = torch.rand(4, generator=g, dtype=torch.float64) * 0.3 + 0.02
    z_grid = torch.linspace(-15, 15, 60_001, dtype=torch.float64)[:, None]
    log_q_grid = -0.5 * ((z_grid - mu) ** 2 / var + var.log() + math.log(2 * math.pi))
    want = torch.trapezoid(log_q_grid.exp() * (log_q_grid - log_prior(z_grid, prior)), z_grid[:, 0], dim=0)
    n = 400_000
    z = mu + var.sqrt() * torch.randn(n, 4, generator=g, dtype=torch.float64)
    draws = kl_per_dim(mu.expand(n, 4), var.expand(n, 4), z, prior)
    if prior == "gaussian":  # the closed form, the same for every draw; then its Monte Carlo form
        assert torch.allclose(draws.mean(0), want, rtol=1e-6, atol=1e-9)
        draws = -0.5 * (var.log() + math.log(2 * math.pi) + 1) - log_prior(z, "gaussian")
    se = draws.std(0) / n**0.5
    # (+1e-4: inside the box the estimate hardly varies, and the grid integral has its own small error)
    assert ((draws.mean(0) - want).abs() < 5 * se + 1e-4).all(), (draws.mean(0), want, se)


def test_unknown_prior_is_refused_by_name():
    with pytest.raises(ValueError, match="unknown prior 'box'"):
        log_prior(torch.zeros(2), "box")


def test_spatial_softmax_reads_a_keypoints_position(fresh_seed):
    """SpatialSoftmax's x and y are the softmax-weighted means of the map's coordinates: a channel whose logits
    peak sharply at one cell reads that cell's coordinates, and a map shifted one column moves x by one step."""
    from sami_reference.nets import SpatialSoftmax

    rng = torch.Generator().manual_seed(fresh_seed)
    C, S = 3, 8
    pool = SpatialSoftmax(C, S, bias=False)
    with torch.no_grad():
        pool.logits.weight.copy_(torch.eye(C).reshape(C, C, 1, 1) * 50.0)  # logits = 50 x the map itself
    rows, cols = torch.randint(0, S, (C,), generator=rng), torch.randint(0, S - 1, (C,), generator=rng)
    h = torch.zeros(1, C, S, S)
    h[0, torch.arange(C), rows, cols] = 1.0
    out = pool(h)[0]
    coords = torch.linspace(-1, 1, S)
    assert torch.allclose(out[:C], coords[cols], atol=1e-6) and torch.allclose(out[C:2 * C], coords[rows], atol=1e-6)
    assert torch.allclose(out[2 * C:], torch.full((C,), 1.0 / S**2))
    shifted = pool(torch.roll(h, 1, dims=3))[0]
    assert torch.allclose(shifted[:C] - out[:C], torch.full((C,), 2.0 / (S - 1)), atol=1e-6)
