"""Many ``Runtime.generate`` requests in as few backend calls as possible, each answered exactly as alone.

``generate_batch(runtime, requests)`` takes requests as dicts of ``Runtime.generate``'s keyword arguments
(``guide``, ``z``, ``n``, ``steps``, ``sampler``, ``eta``, ``seed``, ``scale``, ``mask``, ``guide_mean``) and
returns one ``Samples`` per request, bit for bit what ``runtime.generate(**request)`` returns. Each request is
checked and planned by ``Runtime.plan_generate`` (its guide encoded, its latents drawn); the requests that
share a sampler, a step count, an eta and guidance (latents, or none: unconditional sampling runs another
graph) then sample together: their rows are concatenated, each keeping its own seed (the loop takes a seed
per row) and its indices 0..n-1, and its own latents, mask and scale (per-row inputs of the guided graph), so
that a row's noise and model inputs are those of the lone call. Groups run one after another. This relies on
the backend computing a row independently of the rows beside it, which the CPU backend does bit for bit
(tests/test_batching.py checks it on the shipped model).
"""

from __future__ import annotations

import time
from typing import Sequence

import numpy as np

from sami_rt.errors import InputError, SamplingError
from sami_rt.runtime import GeneratePlan, Runtime

REQUEST_KEYS = ("guide", "z", "n", "steps", "sampler", "eta", "seed", "scale", "mask", "guide_mean", "interval")


def plan_request(runtime: Runtime, request: dict) -> GeneratePlan:
    """One request checked and planned (``Runtime.plan_generate``); InputError for an unknown key."""
    unknown = sorted(set(request) - set(REQUEST_KEYS))
    if unknown:
        raise InputError(f"unknown generate argument {unknown[0]!r}; expected some of {', '.join(REQUEST_KEYS)}")
    return runtime.plan_generate(**request)


def group_key(plan: GeneratePlan) -> tuple:
    """Plans with equal keys sample in one loop: the same coefficients, and the same graph (guided or not)."""
    return plan.sampler, plan.steps, plan.eta, plan.interval, plan.z is None


def sample_plans(runtime: Runtime, plans: Sequence[GeneratePlan], batch: int = 64, use_cpp: bool | None = None
                 ) -> list[np.ndarray]:
    """The images of plans that share a ``group_key``, sampled together (``batch`` rows per loop call); one
    array per plan, each equal to what its lone ``Runtime.sample_plan`` call gives."""
    D = runtime.latent_dim
    seeds = np.concatenate([np.full(p.n, int(p.seed), dtype=np.uint64) for p in plans])
    idx = np.concatenate([np.arange(p.n, dtype=np.int64) for p in plans])
    z = mask = scale = None
    if plans[0].z is not None:
        rows = [p.row_guidance(D) for p in plans]
        z, mask, scale = (np.concatenate([r[k] for r in rows]) for k in range(3))
    x = runtime.sample_rows(plans[0].coeffs, seeds, idx, z, mask, scale, batch=batch, use_cpp=use_cpp)
    bounds = np.cumsum([0] + [p.n for p in plans])
    return [x[lo:hi] for lo, hi in zip(bounds[:-1], bounds[1:])]


def generate_batch(runtime: Runtime, requests: Sequence[dict], batch: int = 64, use_cpp: bool | None = None,
                   return_errors: bool = False) -> list:
    """One ``Samples`` per request, each equal to ``runtime.generate(**request)`` (see the module's docstring).

    A request that cannot be used raises its error (``InputError``, ``ImageError``: one sentence); with
    ``return_errors`` its place in the list holds that error instead (any exception its checks raised) and
    the others are answered. A group
    whose sampling fails (a step producing NaN or infinity) is sampled again one request at a time, so that
    the error goes to the request that caused it. ``Samples.seconds`` is the whole call's time."""
    t0 = time.perf_counter()
    out: list = [None] * len(requests)
    plans: dict[int, GeneratePlan] = {}
    for i, request in enumerate(requests):
        try:
            plans[i] = plan_request(runtime, request)
        except Exception as e:  # noqa: BLE001 -- with return_errors, a request's own failure is its answer alone
            if not return_errors:
                raise
            out[i] = e
    groups: dict[tuple, list[int]] = {}
    for i, plan in plans.items():
        groups.setdefault(group_key(plan), []).append(i)
    images: dict[int, np.ndarray] = {}
    for members in groups.values():
        try:
            xs = sample_plans(runtime, [plans[i] for i in members], batch, use_cpp)
            images.update(zip(members, xs))
        except SamplingError:
            for i in members:  # alone, as generate runs it: the error (and its message) of the lone call
                try:
                    images[i] = runtime.sample_plan(plans[i], batch=batch, use_cpp=use_cpp)
                except SamplingError as e:
                    if not return_errors:
                        raise
                    out[i] = e
    seconds = time.perf_counter() - t0
    for i, x in images.items():
        out[i] = plans[i].samples(x, seconds)
    return out

