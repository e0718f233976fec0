import numpy as np
import pytest

from sami_rt.sampling.schedule import (check_interval, guidance_weights, make_abar, respace, step_coefficients,
                                       step_scale)


def test_linear_abar_matches_product_of_alphas():
    abar = make_abar("linear", 400, 1e-4, 0.02)
    betas = 1e-4 + (0.02 - 1e-4) * np.arange(400) / 399
    np.testing.assert_allclose(abar, np.cumprod(1 - betas), rtol=1e-12)
    assert abar.dtype == np.float64 and np.all(np.diff(abar) < 0)


def test_cosine_abar_follows_the_closed_form_where_unclipped():
    T, s = 1000, 0.008
    abar = make_abar("cosine", T)
    f = lambda u: np.cos((u / T + s) / (1 + s) * np.pi / 2) ** 2  # noqa: E731
    t = np.arange(1, 900)
    np.testing.assert_allclose(abar[t - 1], f(t) / f(0), rtol=1e-9)
    assert 0 < abar[-1] < 1e-4 and np.all(np.diff(abar) < 0)


def test_unknown_schedule_and_bad_steps_are_named():
    with pytest.raises(ValueError, match="unknown noise schedule 'sigmoid'"):
        make_abar("sigmoid", 10)
    with pytest.raises(ValueError, match="between 1 and the model's T=10"):
        respace(10, 11)


def test_respace_is_descending_and_ends_at_zero():
    ts = respace(400, 50)
    assert ts[0] == 399 and ts[-1] == 0 and len(ts) == 50 and np.all(np.diff(ts) < 0)
    np.testing.assert_array_equal(respace(7, 7), np.arange(6, -1, -1))


def test_ddpm_eta1_noise_is_the_posterior_variance():
    abar = make_abar("linear", 100)
    co = step_coefficients(abar, respace(100, 100), eta=1.0)
    betas = 1 - abar / np.concatenate([[1.0], abar[:-1]])
    t = np.arange(99, 0, -1)
    beta_tilde = (1 - abar[t - 1]) / (1 - abar[t]) * betas[t]
    np.testing.assert_allclose(co["sigma"][:-1] ** 2, beta_tilde, rtol=1e-10)
    assert co["sigma"][-1] == 0.0


def test_ddim_with_the_true_noise_stays_on_the_forward_process(fresh_seed):
    """eta = 0 and eps_hat = the eps that made x_t: every step lands on sqrt(a_s) x0 + sqrt(1 - a_s) eps, then x0."""
    rng = np.random.default_rng(fresh_seed)
    abar = make_abar("cosine", 200)
    co = step_coefficients(abar, respace(200, 17), eta=0.0)
    x0, eps = rng.normal(size=5), rng.normal(size=5)
    x = np.sqrt(abar[co["t"][0]]) * x0 + np.sqrt(1 - abar[co["t"][0]]) * eps
    for i in range(len(co["t"])):
        x = co["c_x"][i] * x + co["c_eps"][i] * eps
        a_s = abar[co["t"][i + 1]] if i + 1 < len(co["t"]) else 1.0
        np.testing.assert_allclose(x, np.sqrt(a_s) * x0 + np.sqrt(1 - a_s) * eps, rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(x, x0, atol=1e-9)


def test_guidance_weights_mark_the_levels_inside_the_interval(fresh_seed):
    """Closed form: step i is inside when lo <= t_i / (T - 1) <= hi; its scale is s inside and 1 outside."""
    rng = np.random.default_rng(fresh_seed)
    T, steps = int(rng.integers(50, 1000)), int(rng.integers(5, 50))
    lo, hi = sorted(rng.uniform(0, 1, 2))
    ts = respace(T, steps)
    w = guidance_weights(ts, T, (lo, hi))
    want = [1.0 if lo <= t / (T - 1) <= hi else 0.0 for t in ts]
    assert w.tolist() == want, (lo, hi, ts)
    w = guidance_weights(ts, T, (0.25, 0.75))  # a fixed interval holds both kinds of step
    assert 0 < w.sum() < len(ts) and w[0] == 0 and w[-1] == 0
    np.testing.assert_array_equal(guidance_weights(ts, T), np.ones(len(ts)))  # the default guides every step
    s = float(rng.uniform(2, 20))
    assert step_scale(s, 1.0) == s and step_scale(s, 0.0) == 1.0
    rows = rng.uniform(1, 5, 4)
    np.testing.assert_allclose(step_scale(rows, 0.0), 1.0)


@pytest.mark.parametrize("bad", [(0.5, 0.5), (0.6, 0.2), (-0.1, 0.5), (0.2, 1.5), (0.1,), "ab", 3.0,
                                 (float("nan"), 1.0)])
def test_a_bad_guidance_interval_is_one_sentence(bad):
    with pytest.raises(ValueError, match="guidance interval"):
        check_interval(bad)
