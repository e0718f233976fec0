"""DPM-Solver++(2M) and its SDE form, written as the algorithm reads in the paper (Lu et al. 2022, "DPM-Solver++:
Fast Solver for Guided Sampling of Diffusion Probabilistic Models", Algorithm 2; the SDE form as k-diffusion's
``sample_dpmpp_2m_sde`` with eta = 1, midpoint). The readable twin of the fast path: the runtime samples with
``schedule.dpmpp_2m_coefficients``, this update rewritten as five coefficients per step that the C++ loop (and
its numpy twin, ``loop.loop_numpy``) run; tests/test_dpmsolver.py holds the two to each other step by step.

On the variance-preserving scale, alpha_t = sqrt(abar_t), sigma_t = sqrt(1 - abar_t), lambda_t = log(alpha_t /
sigma_t). A step from level t to s (the next level; abar = 1 after the last):

    x0     = (x - sigma_t eps(x, t)) / alpha_t                 the data prediction
    h      = lambda_s - lambda_t,   r = h_prev / h
    D      = (1 + 1/(2r)) x0 - 1/(2r) x0_prev                   (D = x0 on a first-order step)
    ODE:     x <- (sigma_s / sigma_t) x - alpha_s (e^-h - 1) D
    SDE:     x <- (sigma_s / sigma_t) e^-h x + alpha_s (1 - e^-2h) D + sigma_s sqrt(1 - e^-2h) noise

First-order steps: the first (no x0_prev yet), the step into the last level and the final step to abar = 1
(``dpmpp_2m_coefficients`` says why); the final step returns x0 itself.
"""

from __future__ import annotations

from typing import Callable

import numpy as np


def dpmpp_2m_step(abar, ts, i: int, x, eps, x0_prev=None, h_prev=None, noise=None, sde: bool = False):
    """Step ``i`` of the solver from x at level ts[i] with eps = eps(x, ts[i]), in float64: (x at the next
    level, x0 of this step, h of this step); pass the last two to the next step."""
    n = len(ts)
    a_t = abar[ts[i]]
    a_s = abar[ts[i + 1]] if i + 1 < n else 1.0
    alpha_t, sigma_t, alpha_s, sigma_s = np.sqrt(a_t), np.sqrt(1 - a_t), np.sqrt(a_s), np.sqrt(1 - a_s)
    with np.errstate(divide="ignore"):
        h = np.log(alpha_s / sigma_s) - np.log(alpha_t / sigma_t)  # +inf on the final step
    x0 = (x - sigma_t * eps) / alpha_t
    if i == 0 or i >= n - 2:
        D = x0
    else:
        r = h_prev / h
        D = (1 + 1 / (2 * r)) * x0 - 1 / (2 * r) * x0_prev
    if sde:
        x = sigma_s / sigma_t * np.exp(-h) * x + alpha_s * (1 - np.exp(-2 * h)) * D
        x = x + sigma_s * np.sqrt(1 - np.exp(-2 * h)) * noise
    else:
        x = sigma_s / sigma_t * x - alpha_s * np.expm1(-h) * D
    return x, x0, h


def sample_dpmpp_2m(eps: Callable, x, abar, ts, sde: bool = False, noise: Callable | None = None,
                    callback: Callable | None = None) -> np.ndarray:
    """Solve from x at level ts[0] to abar = 1: ``eps(x, i)`` the model's noise prediction at step i (level
    ts[i]), ``noise(i)`` the SDE form's standard normals for step i (shaped like x), ``callback(i, t, x0)``
    after each step with the step, its level and the current estimate of the clean image. float64."""
    x = np.asarray(x, dtype=np.float64)
    x0_prev = h_prev = None
    for i in range(len(ts)):
        e = np.asarray(eps(x, i), dtype=np.float64)
        x, x0_prev, h_prev = dpmpp_2m_step(abar, ts, i, x, e, x0_prev, h_prev, noise(i) if sde else None, sde)
        if callback is not None:
            callback(i, int(ts[i]), x0_prev)
    return x
