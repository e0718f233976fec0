"""Noise schedules as pure functions of a few numbers (float64 numpy).

Forward process: x_t = sqrt(abar_t) * x_0 + sqrt(1 - abar_t) * eps, t = 0 .. T-1
(index 0 is the least noisy level). The model bundle stores ``abar`` itself, so
training, export and runtime all read the same array.
"""

from __future__ import annotations

import math

import numpy as np

from sami_rt.errors import InputError

SCHEDULES = ("linear", "cosine", "scaled-linear")
FULL_INTERVAL = (0.0, 1.0)  # the guidance interval that guides every step at the sampling scale


def linear_betas(T: int, beta_start: float = 1e-4, beta_end: float = 0.02) -> np.ndarray:
    """Ho et al. (2020): betas spaced linearly from beta_start to beta_end."""
    if T < 1:
        raise ValueError(f"T must be a positive number of noise levels, got {T}")
    return np.linspace(beta_start, beta_end, T, dtype=np.float64)


def cosine_abar(T: int, s: float = 0.008, max_beta: float = 0.999) -> np.ndarray:
    """Nichol & Dhariwal (2021), Eq. 17: abar_t = f(t)/f(0), f(t) = cos^2((t/T + s)/(1 + s) * pi/2).

    Betas are clipped at ``max_beta`` as in the paper, so abar is recomputed from the
    clipped betas.
    """
    if T < 1:
        raise ValueError(f"T must be a positive number of noise levels, got {T}")
    f = lambda u: math.cos((u / T + s) / (1 + s) * math.pi / 2) ** 2  # noqa: E731
    betas = np.array([min(1 - f(i + 1) / f(i), max_beta) for i in range(T)], dtype=np.float64)
    return np.cumprod(1.0 - betas)


def make_abar(kind: str, T: int, beta_start: float = 1e-4, beta_end: float = 0.02) -> np.ndarray:
    """abar_t for t = 0 .. T-1 (float64, strictly decreasing, in (0, 1))."""
    if kind == "linear":
        return np.cumprod(1.0 - linear_betas(T, beta_start, beta_end))
    if kind == "cosine":
        return cosine_abar(T)
    if kind == "scaled-linear":  # latent-diffusion / diffusers "scaled_linear": linear in sqrt(beta)
        return np.cumprod(1.0 - linear_betas(T, beta_start**0.5, beta_end**0.5) ** 2)
    raise ValueError(f"unknown noise schedule {kind!r}; expected one of {SCHEDULES}")


def respace(T: int, steps: int) -> np.ndarray:
    """Evenly spaced subset of ``steps`` timesteps from T-1 down to 0 (descending, int64)."""
    if not 1 <= steps <= T:
        raise ValueError(f"steps must be between 1 and the model's T={T}, got {steps}")
    return np.unique(np.round(np.linspace(0, T - 1, steps)).astype(np.int64))[::-1].copy()


def check_interval(interval) -> tuple[float, float]:
    """A guidance interval as (lo, hi) floats with 0 <= lo < hi <= 1, or InputError (a ValueError) in one
    sentence."""
    try:
        lo, hi = (float(v) for v in interval)
    except (TypeError, ValueError):
        raise InputError(f"a guidance interval is two numbers LO HI, got {interval!r}") from None
    if not (0.0 <= lo < hi <= 1.0):
        raise InputError(f"a guidance interval needs 0 <= LO < HI <= 1 (fractions of the noise levels, 0 the least "
                         f"noisy), got {lo:g} {hi:g}")
    return lo, hi


def guidance_weights(timesteps: np.ndarray, T: int, interval=FULL_INTERVAL) -> np.ndarray:
    """Per step of ``timesteps`` (levels 0 .. T-1): 1.0 where the level's fraction t / (T - 1) of the schedule lies
    in the guidance interval [lo, hi], else 0.0 (float64). A step's guidance scale is ``step_scale(s, w)``:
    the sampling scale s inside the interval, the exact model (1) outside it (guidance limited to an interval of
    noise levels, Kynkaanniemi et al. 2024, with the exact posterior rather than none outside)."""
    lo, hi = check_interval(interval)
    u = np.asarray(timesteps, dtype=np.float64) / max(T - 1, 1)
    return ((u >= lo) & (u <= hi)).astype(np.float64)


def step_scale(scale, weight: float):
    """The guidance scale of one step: ``1 + (scale - 1) * weight`` (scale where the weight is 1, 1 where it
    is 0), for a scalar or an array of per-row scales."""
    return 1.0 + (scale - 1.0) * weight if weight != 1.0 else scale


def step_coefficients(abar: np.ndarray, timesteps: np.ndarray, eta: float) -> dict[str, np.ndarray]:
    """Per-step coefficients of the generalised DDIM update (Song et al. 2021, Eq. 12).

    For step i going from t = timesteps[i] to s = timesteps[i+1] (s = -1 means x_0, abar = 1):
        x0_hat = (x_t - sqrt(1 - abar_t) * eps_hat) / sqrt(abar_t)
        sigma  = eta * sqrt((1 - abar_s) / (1 - abar_t)) * sqrt(1 - abar_t / abar_s)
        x_s    = sqrt(abar_s) * x0_hat + sqrt(1 - abar_s - sigma^2) * eps_hat + sigma * noise
    eta = 1 on the full set of timesteps is DDPM ancestral sampling; eta = 0 is DDIM.
    Returned as linear coefficients: x_s = c_x * x_t + c_eps * eps_hat + sigma * noise.
    """
    abar = np.asarray(abar, dtype=np.float64)
    t = np.asarray(timesteps, dtype=np.int64)
    a_t = abar[t]
    a_s = np.concatenate([abar[t[1:]], [1.0]])
    sigma = eta * np.sqrt((1 - a_s) / (1 - a_t)) * np.sqrt(np.clip(1 - a_t / a_s, 0.0, None))
    c_x = np.sqrt(a_s / a_t)
    c_eps = np.sqrt(np.clip(1 - a_s - sigma**2, 0.0, None)) - np.sqrt(a_s) * np.sqrt(1 - a_t) / np.sqrt(a_t)
    return {"t": t, "c_x": c_x, "c_eps": c_eps, "sigma": sigma, "sqrt_1m_abar": np.sqrt(1 - a_t)}



def dpmpp_2m_coefficients(abar: np.ndarray, timesteps: np.ndarray, sde: bool = False) -> dict[str, np.ndarray]:
    """Per-step coefficients of DPM-Solver++(2M) (Lu et al. 2022, Algorithm 2; midpoint form; the algorithm as a
    loop: ``sami_rt.sampling.dpmpp``) or, with ``sde``,
    of DPM-Solver++(2M) SDE (k-diffusion's ``sample_dpmpp_2m_sde``, eta = 1, midpoint; diffusers'
    ``algorithm_type="sde-dpmsolver++"``), both in data prediction on the eps the loop receives.

    Step i goes from t = timesteps[i] to s = timesteps[i+1] (s = -1 means x_0: abar = 1); p = timesteps[i-1]
    is the previous step's level. With alpha = sqrt(abar), sigma = sqrt(1 - abar), lambda = log(alpha/sigma),
        h      = lambda_s - lambda_t,   r = h_{i-1} / h_i
        x0_i   = (x_i - sigma_t eps_i) / alpha_t                  (x0_{i-1} likewise at p)
        D      = (1 + w) x0_i - w x0_{i-1},   w = 1/(2r)          (w = 0: the first-order step)
        2M:      x_s = (sigma_s/sigma_t) x_i + alpha_s (1 - e^-h) D
        2M SDE:  x_s = (sigma_s/sigma_t) e^-h x_i + alpha_s (1 - e^-2h) D + sigma_s sqrt(1 - e^-2h) noise
    Substituting x0_i and x0_{i-1}, with A = alpha_s (1 - e^-h) (ODE) or alpha_s (1 - e^-2h) (SDE) and
    E = sigma_s/sigma_t (ODE) or (sigma_s/sigma_t) e^-h (SDE), the update is linear in the loop's state:
        c_x      = E + A (1 + w) / alpha_t          c_eps      = -A (1 + w) sigma_t / alpha_t
        c_x_prev = -A w / alpha_p                   c_eps_prev =  A w sigma_p / alpha_p
        sigma    = 0 (ODE) or sigma_s sqrt(1 - e^-2h) (SDE)
    so x_s = c_x x_i + c_eps eps_i + c_x_prev x_{i-1} + c_eps_prev eps_{i-1} + sigma noise.

    First-order steps (w = 0; the ODE form's step is then DDIM's, the SDE form's DDPM's ancestral step with
    eta = 1, to rounding):
    - the first, which has no previous x0;
    - the final one, to abar = 1 (sigma_s = 0, lambda_s = +inf), as in diffusers, whose default
      ``final_sigmas_type="zero"`` makes ``lower_order_final`` hold on the step to sigma = 0 at any number of
      steps: h = inf gives e^-h = 0, E = 0, A = 1, sigma = 0, so x_s = x0_i exactly, with no division by zero
      (r is not formed there, and 1 - e^-h comes from expm1(-inf) = -1);
    - the step into the last level timesteps[-1] (``respace`` always ends at t = 0, abar_0 = 1 - beta_0, all
      but clean: that step is where diffusers' own final step goes, to sigma = 0 from its smallest timestep).
      Its lambda jump is far larger than the step before it (r = 0.23-0.28 on the linear and cosine
      schedules at 20 steps), and extrapolating x0 that far overshoots: on Gaussian data of std 0.3-0.5
      (the exact eps of tests/test_dpmsolver.py; linear or cosine schedule, T = 400, 20 steps) a
      second-order step there left the samples' std 8-21% too large (the SDE form's 24-45%; DDIM's is 8-13%
      too small), a first-order one 0-4% off (the SDE form's 2-5%), and it stays the better choice at 50 and
      100 steps. So the last two steps are first order at every number of steps (diffusers' fewer-than-15
      rule concerns its final step, which is first order here in any case).
    """
    abar = np.asarray(abar, dtype=np.float64)
    t = np.asarray(timesteps, dtype=np.int64)
    n = len(t)
    a_t = abar[t]
    a_s = np.concatenate([abar[t[1:]], [1.0]])
    alpha_t, sig_t = np.sqrt(a_t), np.sqrt(1 - a_t)
    alpha_s, sig_s = np.sqrt(a_s), np.sqrt(1 - a_s)
    lam = 0.5 * (np.log(a_t) - np.log1p(-a_t))  # lambda at each step's own level t (finite: abar in (0, 1))
    h = np.full(n, np.inf)  # the final step's h: lambda of abar = 1 is +inf
    h[:-1] = lam[1:] - lam[:-1]
    w = np.zeros(n)
    if n > 3:  # second order on steps 1 .. n-3: r = h_{i-1} / h_i (both finite and > 0 there)
        w[1:-2] = 0.5 * h[1:-2] / h[:-3]  # 1/(2r)
    k = 2.0 if sde else 1.0
    one_m = -np.expm1(-k * h)  # 1 - e^-h or 1 - e^-2h; 1 at the final step
    E = sig_s / sig_t * (np.exp(-h) if sde else 1.0)
    A = alpha_s * one_m
    alpha_p = np.concatenate([[1.0], alpha_t[:-1]])  # the previous step's level (unused where w = 0)
    sig_p = np.concatenate([[0.0], sig_t[:-1]])
    return {"t": t, "c_x": E + A * (1 + w) / alpha_t, "c_eps": -A * (1 + w) * sig_t / alpha_t,
            "c_x_prev": -A * w / alpha_p, "c_eps_prev": A * w * sig_p / alpha_p,
            "sigma": sig_s * np.sqrt(one_m) if sde else np.zeros(n), "sqrt_1m_abar": sig_t}


# ------------------------------------------------------------------------------- parameterisations
# What a denoiser predicts, converted to the noise prediction eps that this project trains and samples with,
# on the variance-preserving scale (x_t = sqrt(a) x0 + sqrt(1 - a) eps, a = abar_t). Written with + - * /
# alone, so that one definition serves numpy arrays, the training side's tensors (train/frozen.py) and the
# symbols of an ONNX graph being built (export/compose.py); ``sqrt_a`` and ``sqrt_1ma`` broadcast against x_t.
PREDICTIONS = ("eps", "v", "x0-vp")


def eps_from_prediction(kind: str, out, x_t, sqrt_a, sqrt_1ma):
    """``out`` in parameterisation ``kind`` as eps: ``eps`` itself; ``v`` (Salimans & Ho 2022,
    v = sqrt(a) eps - sqrt(1 - a) x0): eps = sqrt(a) v + sqrt(1 - a) x_t; ``x0-vp`` (the clean image on the VP
    scale, diffusers' ``sample``): eps = (x_t - sqrt(a) x0) / sqrt(1 - a)."""
    if kind == "eps":
        return out
    if kind == "v":
        return sqrt_a * out + sqrt_1ma * x_t
    if kind == "x0-vp":
        return (x_t - sqrt_a * out) / sqrt_1ma
    raise ValueError(f"unknown parameterisation {kind!r}")


def ve_image(x_t, sqrt_a):
    """The VP noisy image on the variance-exploding scale of EDM (Karras et al. 2022): x = x_t / sqrt(a)."""
    return x_t / sqrt_a


def ve_sigma(sqrt_a, sqrt_1ma):
    """EDM's noise level of that image: sigma = sqrt((1 - a) / a), as sqrt(1 - a) / sqrt(a)."""
    return sqrt_1ma / sqrt_a
