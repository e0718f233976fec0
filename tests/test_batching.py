"""sami_rt.scale.batching: many generate requests sampled together, each equal to its lone Runtime.generate call."""

import numpy as np
import pytest

from sami_rt.scale.batching import generate_batch
from sami_rt.errors import InputError
from sami_rt.runtime import SAMPLERS, Runtime
from tests.helpers import EXAMPLES

GUIDES = [str(EXAMPLES / "guide.png"), str(EXAMPLES / "guide_light.png")]


@pytest.fixture(scope="module")
def rt1():
    """The shipped model on one CPU thread, as each sami-rt serve replica runs it by default."""
    return Runtime(device="cpu", threads=1)


def random_request(r: np.random.Generator, D: int) -> dict:
    """A generate request with arguments drawn at random: guide (a file, pixels), latents or none; sampler,
    steps, eta, seed, scale, guidance interval, mask, guide_mean."""
    n = int(r.integers(1, 4))
    sampler = str(r.choice(SAMPLERS))
    req = {"n": n, "sampler": sampler, "steps": int(r.integers(2, 4)), "seed": int(r.integers(0, 2**63))}
    kind = r.integers(4)
    if kind == 0:
        req["guide"] = GUIDES[int(r.integers(2))]
        req["guide_mean"] = bool(r.integers(2))
    elif kind == 1:
        req["guide"] = r.integers(0, 256, (int(r.integers(20, 50)), int(r.integers(20, 50))), dtype=np.uint8)
    elif kind == 2:
        req["z"] = r.standard_normal((n, D)).astype(np.float32) if r.integers(2) else r.standard_normal(D)
    if sampler == "ddim" and r.integers(2):
        req["eta"] = float(r.uniform(0, 1))
    if kind < 3 and r.integers(2):
        req["scale"] = float(r.uniform(0.5, 3))
    if kind < 3 and r.integers(3) == 0:  # a guidance interval: requests of different ones never share a loop
        lo, hi = sorted(r.uniform(0, 1, 2))
        req["interval"] = (float(lo), float(hi))
    if kind < 3 and r.integers(3) == 0:
        req["mask"] = (r.random(D) < 0.5) if r.integers(2) else sorted(r.choice(D, 2, replace=False).tolist())
    return req


def assert_same(got, want):
    assert np.array_equal(got.x, want.x)
    assert (got.z is None and want.z is None) or np.array_equal(got.z, want.z)
    assert (got.seed, got.steps, got.sampler, got.scale, got.notes) == (
        want.seed, want.steps, want.sampler, want.scale, want.notes)


def test_random_mixed_requests_equal_their_lone_generate_calls(rt1, fresh_seed):
    r = np.random.default_rng(fresh_seed)
    requests = [random_request(r, rt1.latent_dim) for _ in range(14)]
    # a few requests that share a group for sure: the same sampler and steps, guided, different seeds
    base = {"sampler": "ddpm", "steps": 3, "guide": GUIDES[0]}
    requests += [{**base, "n": int(r.integers(1, 4)), "seed": int(r.integers(0, 2**63))} for _ in range(3)]
    r.shuffle(requests)
    got = generate_batch(rt1, requests, batch=int(r.integers(3, 20)))
    assert len(got) == len(requests)
    for req, g in zip(requests, got):
        assert_same(g, rt1.generate(**req))
        assert len(g.x) == req["n"] and np.abs(g.x).max() > 0.1


class CountingBackend:
    """The runtime's backend, counting the rows of each denoiser call."""

    def __init__(self, backend):
        self.backend, self.calls = backend, []

    def guided_eps(self, x_t, t, z, mask, scale):
        self.calls.append(("guided", len(x_t)))
        return self.backend.guided_eps(x_t, t, z, mask, scale)

    def denoise(self, x_t, t):
        self.calls.append(("free", len(x_t)))
        return self.backend.denoise(x_t, t)

    def __getattr__(self, name):
        return getattr(self.backend, name)


def test_requests_of_one_group_share_each_backend_call(fresh_seed):
    r = np.random.default_rng(fresh_seed)
    rt = Runtime(device="cpu", threads=1)
    rt.backend = counting = CountingBackend(rt.backend)
    D, steps = rt.latent_dim, int(r.integers(2, 5))
    sizes = [int(k) for k in r.integers(1, 5, 3)]
    guided = [{"z": r.standard_normal((k, D)), "n": k, "steps": steps, "seed": int(r.integers(2**40))} for k in sizes]
    free = [{"n": 2, "steps": steps, "seed": int(r.integers(2**40))}, {"n": 1, "steps": steps, "seed": 5}]
    generate_batch(rt, guided + free + [{**free[0], "sampler": "ddim"}])
    # one loop per group: guided ddpm (all three requests' rows), unconditional ddpm, unconditional ddim
    assert counting.calls == [("guided", sum(sizes))] * steps + [("free", 3)] * steps + [("free", 2)] * steps


def test_a_bad_request_gets_its_own_error_and_the_others_their_samples(rt1, fresh_seed):
    r = np.random.default_rng(fresh_seed)
    D = rt1.latent_dim
    good = [random_request(r, D) for _ in range(3)]
    bad = [{"n": 0}, {"sampler": "euler"}, {"z": r.standard_normal(D + 1)}, {"seeds": 3}, {"seed": -1},
           {"n": 2, "steps": 3, "guide": r.standard_normal((1, 1, 32, 32)).astype(np.float32) * np.inf},
           # values that overflowed once (an OverflowError that failed the whole batch): one sentence each now
           {"mask": [10**30]}, {"mask": [2**64 - 1]}, {"z": r.standard_normal(D), "scale": 1e308},
           {"scale": 1e-50}, {"sampler": "ddim", "eta": 10**400}, {"seed": 2**64}]
    mixed = good[:1] + bad[:3] + good[1:] + bad[3:]
    got = generate_batch(rt1, mixed, return_errors=True)
    for req, g in zip(mixed, got):
        if any(req is b for b in bad):
            assert isinstance(g, InputError) and str(g).count(". ") == 0
        else:
            assert_same(g, rt1.generate(**req))
    with pytest.raises(InputError, match="n must be a positive number"):
        generate_batch(rt1, good + bad[:1])


def test_seeds_above_int64_in_a_batch_equal_their_lone_calls(rt1, fresh_seed):
    """Seeds 2**63 and 2**64 - 1 (uint64 only) side by side with an ordinary one in one loop."""
    r = np.random.default_rng(fresh_seed)
    D = rt1.latent_dim
    z = r.standard_normal((2, D)).astype(np.float32)
    requests = [{"z": z, "n": 2, "steps": 3, "seed": s} for s in (2**63, 2**64 - 1, int(r.integers(2**63)))]
    requests.append({"n": 1, "steps": 3, "seed": np.uint64(2**64 - 1)})
    got = generate_batch(rt1, requests)
    for req, g in zip(requests, got):
        assert_same(g, rt1.generate(**req))
    assert not np.array_equal(got[0].x, got[1].x)


def test_sample_plan_is_generate_after_plan_generate(rt1, fresh_seed):
    r = np.random.default_rng(fresh_seed)
    args = {"guide": GUIDES[0], "n": 3, "steps": 2, "sampler": "ddim", "eta": 0.5, "seed": int(r.integers(2**63))}
    plan = rt1.plan_generate(**args)
    np.testing.assert_array_equal(rt1.sample_plan(plan, batch=2), rt1.generate(**args).x)


def test_the_serve_api_takes_a_guidance_interval_and_refuses_a_bad_one(rt1):
    """POST /generate's ``interval`` reaches Runtime.generate as (lo, hi); a malformed one is one sentence."""
    from sami_rt.scale import serve_api
    from sami_rt.scale.batching import plan_request

    args, _, _, _ = serve_api.generate_args({"n": 1, "interval": [0.2, 0.6]}, rt1)
    assert args["interval"] == (0.2, 0.6) and plan_request(rt1, args).interval == (0.2, 0.6)
    assert serve_api.info(rt1)["default_interval"] == list(rt1.bundle.manifest.sampling_interval)
    for bad in ([0.2], ["0", 1], [True, 1], 0.5):
        with pytest.raises(InputError, match="interval must be two numbers"):
            serve_api.generate_args({"interval": bad}, rt1)
    args, _, _, _ = serve_api.generate_args({"interval": [0.6, 0.2]}, rt1)
    with pytest.raises(InputError, match="a guidance interval needs 0 <= LO < HI <= 1"):
        plan_request(rt1, args)
