"""The sampling loop: C++ against numpy, batch invariance, and the exact score of a Gaussian."""

import numpy as np
import pytest

from sami_rt.sampling import rng
from sami_rt.sampling.loop import Cancelled, SamplingError, has_extension, initial_noise, run_loop
from sami_rt.sampling.schedule import dpmpp_2m_coefficients, make_abar, respace, step_coefficients

needs_cpp = pytest.mark.skipif(not has_extension(), reason="the C++ extension sami_rt.sampling._sampler is not built")


def test_philox_known_answers():
    # Random123's known-answer vectors for Philox4x32-10
    assert [int(v) for v in rng.philox4x32(0, 0, 0, 0, 0, 0)] == [0x6627E8D5, 0xE169C58D, 0xBC57AC4C, 0x9B00DBD8]
    ones = 0xFFFFFFFF
    assert [int(v) for v in rng.philox4x32(ones, ones, ones, ones, ones, ones)] == [
        0x408F276D, 0x41C83B0E, 0xA20BC7C6, 0x6D5451FD]


def test_noise_is_standard_normal_and_keyed(fresh_seed):
    seed = int(np.random.default_rng(fresh_seed).integers(2**40))
    x = rng.normals(seed, 3, 7, 200_000)
    assert abs(x.mean()) < 0.01 and abs(x.std() - 1) < 0.01
    assert not np.array_equal(rng.normals(seed, 3, 7, 8), rng.normals(seed, 4, 7, 8))
    assert not np.array_equal(rng.normals(seed, 3, 7, 8), rng.normals(seed, 3, 8, 8))
    np.testing.assert_array_equal(rng.normals(seed, 3, 7, 8), rng.normals(seed, 3, 7, 20)[:8])


@needs_cpp
def test_cpp_noise_equals_numpy_noise(fresh_seed):
    from sami_rt.sampling import _sampler

    r = np.random.default_rng(fresh_seed)
    for _ in range(5):
        seed, idx, step = int(r.integers(2**63)), int(r.integers(2**32)), int(r.integers(2**32))
        np.testing.assert_array_equal(_sampler.normals(seed, idx, step, 1003), rng.normals(seed, idx, step, 1003))


def _nonlinear_backend(dim, r):
    W = (r.standard_normal((dim, dim)) * 0.3 / np.sqrt(dim)).astype(np.float32)

    def backend(x, i):
        flat = x.reshape(len(x), -1)
        return np.tanh(flat @ W + 0.01 * i).reshape(x.shape).astype(np.float32)

    return backend


@needs_cpp
@pytest.mark.parametrize("eta,steps", [(1.0, 100), (0.0, 25), (0.3, 40)])
@pytest.mark.parametrize("batch", [1, 4])
def test_cpp_loop_equals_numpy_loop(eta, steps, batch, fresh_seed):
    r = np.random.default_rng(fresh_seed)
    seed = int(r.integers(2**32))
    backend = _nonlinear_backend(2 * 5 * 5, r)
    co = step_coefficients(make_abar("linear", 100), respace(100, steps), eta)
    idx = r.integers(0, 1000, size=batch)
    a = initial_noise(seed, idx, (2, 5, 5))
    b = a.copy()
    run_loop(backend, a, co, seed, idx, use_cpp=True)
    run_loop(backend, b, co, seed, idx, use_cpp=False)
    assert np.abs(a - b).max() <= 1e-5
    assert np.abs(a).max() > 0.1  # a real result, not a collapsed one


BATCH_CASES = {  # sampler: (coefficients, the backend's dependence on the step index)
    "ddpm": (lambda: step_coefficients(make_abar("cosine", 60), respace(60, 30), 1.0), 0),
    # the multistep samplers (previous step's x and eps kept per sample), with a step-dependent backend
    "dpmpp-2m": (lambda: dpmpp_2m_coefficients(make_abar("cosine", 60), respace(60, 12), sde=False), 1),
    "dpmpp-2m-sde": (lambda: dpmpp_2m_coefficients(make_abar("cosine", 60), respace(60, 12), sde=True), 1),
}


@pytest.mark.parametrize("use_cpp", [False, pytest.param(True, marks=needs_cpp)])
@pytest.mark.parametrize("sampler", list(BATCH_CASES))
def test_a_sample_does_not_depend_on_its_batch(sampler, use_cpp, fresh_seed):
    r = np.random.default_rng(fresh_seed)
    seed = int(r.integers(2**32))
    make, k = BATCH_CASES[sampler]
    co = make()

    def backend(x, i):  # acts on each sample separately, as a network does
        return (0.5 * x + 0.1 * np.sin(x + k * i)).astype(np.float32)

    idx = np.arange(6)
    whole = initial_noise(seed, idx, (3, 4))
    run_loop(backend, whole, co, seed, idx, use_cpp=use_cpp)
    for part in (idx[:2], idx[2:5], idx[5:]):
        x = initial_noise(seed, part, (3, 4))
        run_loop(backend, x, co, seed, part, use_cpp=use_cpp)
        np.testing.assert_array_equal(x, whole[part])


@pytest.mark.parametrize("use_cpp", [False, pytest.param(True, marks=needs_cpp)])
@pytest.mark.parametrize("sampler", ["ddpm", "dpmpp-2m-sde"])
def test_a_batch_of_rows_with_their_own_seeds_equals_the_per_seed_calls(sampler, use_cpp, fresh_seed):
    """Per-row seeds: rows of three seeds (each with its own indices 0..n-1) in one loop call give exactly
    what one call per seed gives; a seed array of one value is the integer seed."""
    r = np.random.default_rng(fresh_seed)
    seeds = [int(s) for s in r.integers(0, 2**63, 3)]
    sizes = [int(k) for k in r.integers(1, 4, 3)]
    co = BATCH_CASES[sampler][0]()

    def backend(x, i):
        return (0.5 * x + 0.1 * np.sin(x + i)).astype(np.float32)

    row_seed = np.concatenate([np.full(k, s, dtype=np.uint64) for s, k in zip(seeds, sizes)])
    idx = np.concatenate([np.arange(k) for k in sizes])
    mixed = initial_noise(row_seed, idx, (3, 5))
    run_loop(backend, mixed, co, row_seed, idx, use_cpp=use_cpp)
    parts = []
    for s, k in zip(seeds, sizes):
        x = initial_noise(s, np.arange(k), (3, 5))
        np.testing.assert_array_equal(initial_noise(np.full(k, s, dtype=np.int64), np.arange(k), (3, 5)), x)
        run_loop(backend, x, co, s, np.arange(k), use_cpp=use_cpp)
        parts.append(x)
    np.testing.assert_array_equal(mixed, np.concatenate(parts))
    assert len(set(seeds)) == 3 and not np.array_equal(parts[0][0], parts[1][0])  # the seeds do differ


@needs_cpp
@pytest.mark.parametrize("sampler", ["ddpm", "dpmpp-2m-sde"])
def test_cpp_and_numpy_loops_agree_with_seeds_per_row(sampler, fresh_seed):
    r = np.random.default_rng(fresh_seed)
    seeds = r.integers(0, 2**63, 7).astype(np.uint64)
    idx = r.integers(0, 50, 7)
    co = BATCH_CASES[sampler][0]()
    backend = _nonlinear_backend(3 * 4, r)
    a = initial_noise(seeds, idx, (3, 4))
    b = a.copy()
    run_loop(backend, a, co, seeds, idx, use_cpp=True)
    run_loop(backend, b, co, seeds, idx, use_cpp=False)
    np.testing.assert_array_equal(a, b)
    assert np.abs(a).max() > 0.1


@needs_cpp
@pytest.mark.parametrize("sampler", ["ddpm", "dpmpp-2m-sde"])
def test_seeds_at_the_top_of_the_64_bit_range_agree_in_both_loops(sampler, fresh_seed):
    """Seeds 2**63 and 2**64 - 1 (above int64): as Python integers alone, in a list of per-row seeds, as a
    uint64 array and as 0-d arrays, the C++ and numpy loops give the same samples, and each row equals the
    call with its seed alone."""
    r = np.random.default_rng(fresh_seed)
    top = [2**63, 2**64 - 1]
    seeds = top + [int(r.integers(2**63))]
    idx = np.array([0, 3, 1])
    co = BATCH_CASES[sampler][0]()

    def backend(x, i):  # acts on each row alone (a matrix product would round with the batch's size)
        return (0.5 * x + 0.1 * np.sin(x + i)).astype(np.float32)

    out = {}
    for form in ("list", "uint64"):
        given = seeds if form == "list" else np.array(seeds, dtype=np.uint64)
        for use_cpp in (True, False):
            x = initial_noise(given, idx, (3, 4))
            run_loop(backend, x, co, given, idx, use_cpp=use_cpp)
            out[form, use_cpp] = x
    for x in out.values():
        np.testing.assert_array_equal(x, out["list", False])
    for b, s in enumerate(seeds):
        for alone in (s, np.array(s, dtype=np.uint64), [s]):
            x = initial_noise(alone, idx[b:b + 1], (3, 4))
            run_loop(backend, x, co, alone, idx[b:b + 1], use_cpp=bool(b % 2))
            np.testing.assert_array_equal(x, out["list", False][b:b + 1])
    assert not np.array_equal(out["list", False][0], out["list", False][1])
    np.testing.assert_array_equal(rng.row_seeds(top + [-1], 3), np.array(top + [2**64 - 1], dtype=np.uint64))


def test_per_row_seeds_must_be_one_integer_per_row():
    co = step_coefficients(make_abar("linear", 10), respace(10, 5), 1.0)
    x = initial_noise(3, [0, 1], (4,))
    for bad in (np.array([1, 2, 3]), np.array([1.0, 2.0]), 1.5, [1, 2.0], [True, 1], [1, None], np.array(1.0)):
        with pytest.raises(ValueError, match="seed"):
            run_loop(lambda x, i: x * 0.1, x, co, bad, [0, 1])
    with pytest.raises(ValueError, match=r"got 2\.0 among them"):  # the entry, not the dtype numpy would make
        rng.row_seeds([2**63, 2.0], 2)


@pytest.mark.parametrize("use_cpp", [False, pytest.param(True, marks=needs_cpp)])
@pytest.mark.parametrize("eta,steps", [(1.0, 400), (1.0, 100), (0.0, 50), (0.5, 200)])
def test_exact_gaussian_score_reaches_the_data_distribution(use_cpp, eta, steps, fresh_seed):
    """Data x0 ~ N(m, s^2) per pixel: eps*(x_t) = sqrt(1 - a) (x_t - sqrt(a) m) / (a s^2 + 1 - a) is exact.

    Every step is then linear in x, so the output's mean and variance follow exactly from the coefficients:
    the samples must match that propagation to within sampling error, and the propagation must land near
    N(m, s^2) (up to the discretisation error of the chosen steps).
    """
    r = np.random.default_rng(fresh_seed)
    m, s = float(r.uniform(-0.5, 0.5)), float(r.uniform(0.2, 0.6))
    abar = make_abar("cosine", 400)  # abar_T ~ 0: x_T ~ N(0, I) is the right start
    co = step_coefficients(abar, respace(400, steps), eta)
    k = [np.sqrt(1 - abar[t]) / (abar[t] * s * s + 1 - abar[t]) for t in co["t"]]

    def backend(x, i):
        a = abar[co["t"][i]]
        return (k[i] * (x - np.sqrt(a) * m)).astype(np.float32)

    mean, var = 0.0, 1.0  # exact moments of x through the same steps
    for i, t in enumerate(co["t"]):
        g = co["c_x"][i] + co["c_eps"][i] * k[i]
        mean = g * mean - co["c_eps"][i] * k[i] * np.sqrt(abar[t]) * m
        var = g * g * var + co["sigma"][i] ** 2
    seed = int(r.integers(2**32))
    idx = np.arange(4000)
    x = initial_noise(seed, idx, (8,))
    run_loop(backend, x, co, seed, idx, use_cpp=use_cpp)
    N = x.size
    assert abs(x.mean() - mean) < 5 * np.sqrt(var / N)
    assert abs(x.var() - var) < 5 * var * np.sqrt(2 / N)
    assert abs(mean - m) < 0.01 and abs(np.sqrt(var) / s - 1) < 0.08


def test_progress_cancel_and_non_finite_steps():
    co = step_coefficients(make_abar("linear", 20), respace(20, 10), 1.0)
    seen = []
    x = initial_noise(1, [0, 1], (4,))
    run_loop(lambda x, i: x * 0.1, x, co, 1, [0, 1], progress=lambda d, t: seen.append((d, t)), use_cpp=None)
    assert seen == [(i, 10) for i in range(1, 11)]
    calls = []
    with pytest.raises(Cancelled, match="after 3 of 10 steps"):
        run_loop(lambda x, i: calls.append(i) or x * 0.1, initial_noise(1, [0], (4,)), co, 1, [0],
                 cancel=lambda: len(calls) >= 3)
    for use_cpp in [False] + ([True] if has_extension() else []):
        def bad(x, i):
            return np.full_like(x, np.nan) if i == 4 else x * 0.1

        with pytest.raises(SamplingError, match="sampling step 4 produced 8 non-finite values"):
            run_loop(bad, initial_noise(1, [0, 1], (4,)), co, 1, [0, 1], use_cpp=use_cpp)


def test_loop_refuses_arrays_it_cannot_update_in_place():
    co = step_coefficients(make_abar("linear", 10), respace(10, 5), 0.0)
    with pytest.raises(ValueError, match="C-contiguous float32"):
        run_loop(lambda x, i: x, np.zeros((2, 3), dtype=np.float64), co, 0, [0, 1])
