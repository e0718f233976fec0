"""DPM-Solver++(2M) and its SDE form (sami_rt.sampling.schedule.dpmpp_2m_coefficients) in the runtime's loops: C++ against
numpy, batch invariance, a direct twin written from the paper's x0 form, and the exact score of Gaussian data."""

import numpy as np
import pytest

from sami_rt.sampling.dpmpp import dpmpp_2m_step, sample_dpmpp_2m
from sami_rt.sampling.rng import batch_normals
from sami_rt.sampling.loop import has_extension, initial_noise, run_loop
from sami_rt.sampling.schedule import dpmpp_2m_coefficients, make_abar, respace, step_coefficients

needs_cpp = pytest.mark.skipif(not has_extension(), reason="the C++ extension sami_rt.sampling._sampler is not built")
LOOPS = [False, pytest.param(True, marks=needs_cpp)]
FORMS = {"dpmpp-2m": False, "dpmpp-2m-sde": True}


def _linear_backend(r, shape, abar, ts, reuse=False):
    """A random affine eps(x, i): the exact eps of pixels ~ N(0, 0.5^2) plus a random mixing W x and an offset
    per step, so that samples stay of order 1. ``reuse``: returns the same buffer at every call, as a backend
    with output buffers of its own does (the loops must copy eps_hat to keep it for the next step)."""
    dim = int(np.prod(shape))
    W = r.standard_normal((dim, dim)) * (0.2 / np.sqrt(dim))
    b = r.standard_normal((len(ts), dim)) * 0.05
    a = abar[ts]
    k = np.sqrt(1 - a) / (0.25 * a + 1 - a)
    buf = {}

    def backend(x, i):
        flat = x.reshape(len(x), -1).astype(np.float64)
        e = (k[i] * flat + flat @ W + b[i]).astype(np.float32).reshape(x.shape)
        if not reuse:
            return e
        out = buf.setdefault("out", np.empty_like(e))
        out[...] = e
        return out

    return backend


@needs_cpp
@pytest.mark.parametrize("form", list(FORMS))
@pytest.mark.parametrize("kind,T,steps", [("linear", 400, 20), ("cosine", 1000, 7), ("linear", 100, 100)])
def test_cpp_loop_equals_numpy_loop_bit_for_bit(form, kind, T, steps, fresh_seed):
    r = np.random.default_rng(fresh_seed)
    seed = int(r.integers(2**63))
    abar = make_abar(kind, T)
    co = dpmpp_2m_coefficients(abar, respace(T, steps), sde=FORMS[form])
    shape = (2, 3, 5)  # 30 values a sample: not a multiple of Philox's blocks of 4
    idx = r.integers(0, 2**32, size=3)
    x0 = initial_noise(seed, idx, shape)
    out = {}
    for use_cpp in (True, False):
        for reuse in (False, True):
            x = x0.copy()
            run_loop(_linear_backend(np.random.default_rng([fresh_seed, 1]), shape, abar, co["t"], reuse), x, co,
                     seed, idx, use_cpp=use_cpp)
            out[use_cpp, reuse] = x
    for key, x in out.items():
        np.testing.assert_array_equal(x, out[True, False], err_msg=str(key))
    assert np.abs(out[True, False]).max() > 0.1  # a real result, not a collapsed one


# batch invariance of both forms: tests/test_sampler.py::test_a_sample_does_not_depend_on_its_batch


@pytest.mark.parametrize("use_cpp", LOOPS)
@pytest.mark.parametrize("form", list(FORMS))
@pytest.mark.parametrize("kind,T,steps", [("linear", 400, 20), ("cosine", 400, 9), ("scaled-linear", 1000, 30)])
def test_coefficients_equal_the_papers_update(form, kind, T, steps, use_cpp, fresh_seed):
    """The loop (coefficient form, float32 state) against the paper's x0-form update in float64 on the same eps
    and noise: each step from the loop's own state (x_i, eps_i and the previous step's x0 and h) must give the
    loop's x_{i+1} to within float32 rounding. (Not a whole float64 trajectory on the recorded eps: with eps
    held fixed, x0 = (x - sigma eps) / alpha at alpha_T ~ 1e-4 (cosine) turns the float32 rounding of x into
    errors of 1e-4, a property of that comparison, not of the loop.)"""
    r = np.random.default_rng(fresh_seed)
    seed, sde = int(r.integers(2**32)), FORMS[form]
    abar = make_abar(kind, T)
    ts = respace(T, steps)
    co = dpmpp_2m_coefficients(abar, ts, sde=sde)
    shape, idx = (4, 6), np.arange(5)
    inner = _linear_backend(r, shape, abar, ts)
    xs, epss = [], []

    def backend(x, i):
        xs.append(x.astype(np.float64))
        epss.append(inner(x, i))
        return epss[-1]

    x = initial_noise(seed, idx, shape)
    run_loop(backend, x, co, seed, idx, use_cpp=use_cpp)
    xs.append(x.astype(np.float64))
    noise = [batch_normals(seed, idx, i, shape).astype(np.float64) for i in range(steps)]
    x0_prev = h_prev = None
    for i in range(steps):
        want, x0_prev, h_prev = dpmpp_2m_step(abar, ts, i, xs[i], epss[i], x0_prev, h_prev, noise[i], sde)
        np.testing.assert_allclose(xs[i + 1], want, rtol=3e-7, atol=1e-7, err_msg=f"step {i}")
    assert np.abs(xs[-1]).max() > 0.1


def test_first_order_steps_final_step_and_finiteness():
    """The first-order steps are DDIM's (ODE) and DDPM's ancestral ones (SDE); the final step returns x0_hat;
    every coefficient is finite for every number of steps, 1 .. T."""
    abar = make_abar("linear", 40)
    for steps in range(1, 41):
        ts = respace(40, steps)
        for sde in (False, True):
            co = dpmpp_2m_coefficients(abar, ts, sde=sde)
            ref = step_coefficients(abar, ts, 1.0 if sde else 0.0)
            for k in ("c_x", "c_eps", "sigma", "c_x_prev", "c_eps_prev"):
                assert np.all(np.isfinite(co[k])), (steps, sde, k)
            first = [0, len(ts) - 2, len(ts) - 1] if len(ts) > 1 else [0]
            for k in ("c_x", "c_eps", "sigma"):
                np.testing.assert_allclose(co[k][first], ref[k][first], rtol=1e-12, atol=1e-12)
            assert not np.any(co["c_x_prev"][first]) and not np.any(co["c_eps_prev"][first])
            if len(ts) > 3:
                assert np.all(co["c_x_prev"][1:-2] != 0)
            a = abar[ts[-1]]
            np.testing.assert_allclose([co["c_x"][-1], co["c_eps"][-1], co["sigma"][-1]],
                                       [1 / np.sqrt(a), -np.sqrt(1 - a) / np.sqrt(a), 0.0], rtol=1e-14)


def _propagate(co, abar, m, s):
    """Exact mean and std of the output under eps*(x_t) = k_t (x_t - sqrt(a_t) m): every x is affine in x_T and
    the step noises, tracked as a vector over the basis (1, x_T, n_0 .. n_{N-1})."""
    ts, n = co["t"], len(co["t"])
    a = abar[ts]
    k = np.sqrt(1 - a) / (a * s * s + 1 - a)
    cxp, cep = co.get("c_x_prev", np.zeros(n)), co.get("c_eps_prev", np.zeros(n))
    x = np.zeros(n + 2)
    x[1] = 1.0
    x_prev = e_prev = np.zeros(n + 2)
    for i in range(n):
        e = k[i] * x
        e[0] -= k[i] * np.sqrt(a[i]) * m
        new = co["c_x"][i] * x + co["c_eps"][i] * e + cxp[i] * x_prev + cep[i] * e_prev
        new[2 + i] += co["sigma"][i]
        x_prev, e_prev, x = x, e, new
    return x[0], float(np.sqrt((x[1:] ** 2).sum()))


@pytest.mark.parametrize("use_cpp", LOOPS)
def test_exact_gaussian_score_dpmpp_beats_ddim_at_20_steps(use_cpp, fresh_seed):
    """Data x0 ~ N(m, s^2) per pixel, eps*(x_t) = sqrt(1 - a) (x_t - sqrt(a) m) / (a s^2 + 1 - a) exactly; cosine
    schedule, T = 400 (abar_T ~ 1.5e-8: x_T ~ N(0, I) is the right start), 20 steps.

    Every step is linear in x, so the output's mean and std follow exactly from the coefficients
    (``_propagate``); what is left is the discretisation error. Over m in [-0.5, 0.5], s in [0.3, 0.7] (a grid of
    11 x 41) it was measured at most 4.3e-5 in the mean for every sampler, and in the std at most 2.8%
    (dpmpp-2m), 3.0% (dpmpp-2m-sde), against 7.1-10.9% for DDIM (19% for DDPM at 20 steps); dpmpp-2m's error
    |mean - m| + |std - s| was at most 0.26 of DDIM's. Hence: 1e-3 on the mean and 4% on the std, and dpmpp-2m
    strictly better than DDIM. The samples (4000 x 8 values) must match those moments within 5 standard errors,
    and so m and s within the two tolerances plus 5 standard errors; on the same x_T dpmpp-2m's sample error
    must be strictly smaller than DDIM's too.
    """
    r = np.random.default_rng(fresh_seed)
    m, s = float(r.uniform(-0.5, 0.5)), float(r.uniform(0.3, 0.7))
    abar = make_abar("cosine", 400)
    ts = respace(400, 20)
    cos = {"ddim": step_coefficients(abar, ts, 0.0), "dpmpp-2m": dpmpp_2m_coefficients(abar, ts),
           "dpmpp-2m-sde": dpmpp_2m_coefficients(abar, ts, sde=True)}
    seed = int(r.integers(2**32))
    idx = np.arange(4000)
    x_T = initial_noise(seed, idx, (8,))
    N = x_T.size
    exact, sample_err = {}, {}
    for name, co in cos.items():
        k = np.sqrt(1 - abar[ts]) / (abar[ts] * s * s + 1 - abar[ts])

        def backend(x, i, co=co, k=k):
            return (k[i] * (x - np.sqrt(abar[ts[i]]) * m)).astype(np.float32)

        mean, sd = _propagate(co, abar, m, s)
        exact[name] = abs(mean - m) + abs(sd - s)
        x = x_T.copy()
        run_loop(backend, x, co, seed, idx, use_cpp=use_cpp)
        sample_err[name] = abs(x.mean() - m) + abs(x.std() - s)
        print(f"{name}: m={m:.4f} s={s:.4f}; exact moments {mean:.5f} {sd:.5f} (error {exact[name]:.5f}); samples "
              f"{x.mean():.5f} {x.std():.5f} (error {sample_err[name]:.5f})")
        assert abs(x.mean() - mean) < 5 * sd / np.sqrt(N)
        assert abs(x.var() - sd**2) < 5 * sd**2 * np.sqrt(2 / N)
        if name != "ddim":
            assert abs(mean - m) < 1e-3 and abs(sd / s - 1) < 0.04, (name, mean, sd)
            assert abs(x.mean() - m) < 1e-3 + 5 * s / np.sqrt(N)
            assert abs(x.std() / s - 1) < 0.04 + 5 / np.sqrt(2 * N)
    assert exact["dpmpp-2m"] < exact["ddim"]
    assert sample_err["dpmpp-2m"] < sample_err["ddim"]


def test_runtime_samplers_defaults_and_eta():
    """Runtime.generate takes both, 20 steps by default, and refuses an eta for them in one line."""
    from sami_rt.errors import InputError
    from sami_rt.runtime import SAMPLERS, Runtime

    assert {"dpmpp-2m", "dpmpp-2m-sde"} <= set(SAMPLERS)
    rt = Runtime("disks-small", device="cpu")
    z = np.zeros(rt.latent_dim, dtype=np.float32)
    for sampler in ("dpmpp-2m", "dpmpp-2m-sde"):
        assert rt.generate(z=z, n=1, sampler=sampler, steps=None, seed=1).steps == min(20, rt.bundle.manifest.T)
        with pytest.raises(InputError, match=f"eta applies to the ddpm and ddim samplers only; {sampler} takes"):
            rt.generate(z=z, n=1, steps=2, sampler=sampler, eta=0.0)


@pytest.mark.parametrize("form", list(FORMS))
def test_the_readable_loop_is_the_runtimes_sampler_with_its_estimates(form, fresh_seed):
    """sample_dpmpp_2m (the paper's loop, float64) on the eps and noise the runtime's loop sees gives the
    runtime's samples; its callback sees every step's level and x0 estimate, the last of which is the sample."""
    r = np.random.default_rng(fresh_seed)
    seed, sde = int(r.integers(2**32)), FORMS[form]
    abar, shape, idx = make_abar("linear", 400), (3, 7), np.arange(4)
    ts = respace(400, 20)
    eps = _linear_backend(r, shape, abar, ts)
    x = initial_noise(seed, idx, shape)
    want = x.copy()
    run_loop(eps, want, dpmpp_2m_coefficients(abar, ts, sde=sde), seed, idx, use_cpp=False)
    seen = []
    got = sample_dpmpp_2m(lambda x, i: eps(x.astype(np.float32), i), x, abar, ts, sde,
                          noise=lambda i: batch_normals(seed, idx, i, shape), callback=lambda *a: seen.append(a))
    np.testing.assert_allclose(got, want, rtol=0, atol=2e-5 * np.abs(want).max())
    assert [s[:2] for s in seen] == [(i, int(t)) for i, t in enumerate(ts)] and np.array_equal(seen[-1][2], got)
    assert np.abs(seen[0][2] - got).mean() > 10 * np.abs(seen[-2][2] - got).mean()  # the estimate sharpens
