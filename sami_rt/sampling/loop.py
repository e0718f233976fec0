"""The sampling loop: the C++ extension ``sami_rt.sampling._sampler`` and its numpy twin.

A loop receives a callable ``backend(x, i) -> eps_hat`` (one call per step; it knows the model, the loop
does not), the per-step coefficients of ``sami_rt.sampling.schedule.step_coefficients`` (DDPM / DDIM) or
``dpmpp_2m_coefficients`` (DPM-Solver++(2M), its SDE form) and a seed. It updates x in place:
``x <- float32(c_x[i] x + c_eps[i] eps_hat + c_x_prev[i] x_prev + c_eps_prev[i] eps_prev + sigma[i] noise)``
computed in float64, where x_prev and eps_prev are the previous step's x and eps_hat, kept by the loop in
float32 buffers of its own (only when some c_x_prev or c_eps_prev is not zero; a step whose two are zero
adds nothing, so DDPM / DDIM round exactly as a two-term update). The noise of sample b at step i is drawn
from Philox keyed by (seed[b], indices[b], i) (``sami_rt.sampling.rng``), ``seed`` one integer for every row or one
per row, so a sample's image depends on its seed and index, not on the batch it was drawn in (nor on the
other rows' seeds) or on the loop that drew it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import numpy as np

from sami_rt.errors import Cancelled, SamplingError
from sami_rt.sampling.rng import INIT_STEP, batch_normals, row_seeds
from sami_rt.sampling.schedule import step_scale

# cpp_ext/sampler.cpp's __version__ that this module calls (2: the previous-step terms; 3: a seed per row)
LOOP_VERSION = "3"

try:
    from sami_rt.sampling import _sampler

    _IMPORT_ERROR = None
    if getattr(_sampler, "__version__", None) != LOOP_VERSION:  # a stale build: its loop takes other arguments
        _IMPORT_ERROR = (f"it was built from an older cpp_ext/sampler.cpp (loop version "
                         f"{getattr(_sampler, '__version__', '?')}, this sami_rt needs {LOOP_VERSION}); rebuild it")
        _sampler = None
except ImportError as _e:  # extension not built: the numpy loop does the work
    _sampler = None
    _IMPORT_ERROR = str(_e)

StepFn = Callable[[np.ndarray, int], np.ndarray]  # eps_hat(x, step): what the loop calls at each step (model_step makes one)


def initial_noise(seed, indices, shape) -> np.ndarray:
    """x_T [B, *shape] (float32, C-contiguous), sample b keyed by (seed, indices[b]); ``seed`` one integer, or
    one per row (sample b keyed by (seed[b], indices[b]))."""
    return np.ascontiguousarray(batch_normals(seed, indices, INIT_STEP, shape))


def loop_numpy(backend: StepFn, x: np.ndarray, c_x, c_eps, sigma, seed, indices,
               progress=None, cancel=None, c_x_prev=None, c_eps_prev=None) -> int:
    """The numpy twin of the C++ loop (same arithmetic, same noise). Returns the number of steps done.
    ``seed``: one integer, or one per row; ``c_x_prev``, ``c_eps_prev`` (None: zeros) weigh the previous
    step's x and eps_hat."""
    indices = np.asarray(indices, dtype=np.int64)
    seed = row_seeds(seed, len(x))
    n = len(c_x)
    c_x_prev = np.zeros(n) if c_x_prev is None else np.asarray(c_x_prev, dtype=np.float64)
    c_eps_prev = np.zeros(n) if c_eps_prev is None else np.asarray(c_eps_prev, dtype=np.float64)
    if len(c_eps) != n or len(sigma) != n or len(c_x_prev) != n or len(c_eps_prev) != n:
        raise ValueError("c_x, c_eps, sigma, c_x_prev and c_eps_prev must have one entry per step")
    multistep = bool(np.any(c_x_prev != 0) or np.any(c_eps_prev != 0))
    if multistep:  # the previous step's x and eps_hat, float32 (the backend may reuse its output buffer)
        x_prev, eps_prev = np.zeros_like(x), np.zeros_like(x)
    for i in range(n):
        if cancel is not None and cancel():
            return i
        eps = np.asarray(backend(x, i), dtype=np.float32).reshape(x.shape)
        v = float(c_x[i]) * x.astype(np.float64) + float(c_eps[i]) * eps.astype(np.float64)
        if c_x_prev[i] != 0 or c_eps_prev[i] != 0:
            v += float(c_x_prev[i]) * x_prev.astype(np.float64) + float(c_eps_prev[i]) * eps_prev.astype(np.float64)
        if sigma[i] > 0:
            v += float(sigma[i]) * batch_normals(seed, indices, i, x.shape[1:]).astype(np.float64)
        if multistep:
            x_prev[...] = x
            eps_prev[...] = eps
        x[...] = v.astype(np.float32)
        bad = int((~np.isfinite(x)).sum())
        if bad:
            raise SamplingError(f"sampling step {i} produced {bad} non-finite values")
        if progress is not None:
            progress(i + 1, len(c_x))
    return len(c_x)


def model_step(model, ts, batch: int, z=None, mask=None, scale=None, weights=None) -> StepFn:
    """The loop's ``backend(x_t, i)`` for a model with the backends' interface (numpy arrays in and out): its
    ``guided_eps`` at level ``ts[i]`` with latents ``z``, ``mask`` and ``scale`` (one row per sample), or
    its ``denoise`` where ``z`` is None (unconditional sampling). ``weights`` (one per step, None: all 1, the
    coefficients' ``guidance`` entry) limits the scale to a guidance interval: step i guides at
    ``1 + (scale - 1) * weights[i]`` (``sami_rt.sampling.schedule.step_scale``). ``Runtime.generate`` samples
    through it, and so does the bench's comparison baseline."""
    t = np.empty(batch, dtype=np.int64)
    if z is not None and weights is not None and np.any(np.asarray(weights) != 1.0):
        base = np.asarray(scale, dtype=np.float64)
        per_step = [np.ascontiguousarray(step_scale(base, float(w)), dtype=np.float32) for w in weights]

        def step(x_t, i):
            t.fill(ts[i])
            return model.guided_eps(x_t, t, z, mask, per_step[i])
        return step
    if z is None:
        def step(x_t, i):
            t.fill(ts[i])
            return model.denoise(x_t, t)
    else:
        def step(x_t, i):
            t.fill(ts[i])
            return model.guided_eps(x_t, t, z, mask, scale)
    return step


def has_extension() -> bool:
    return _sampler is not None


def loop_status() -> tuple[bool, str]:
    """(whether the C++ loop runs, what runs and why) in words: the compiled module's file, or why the numpy
    loop runs instead (the extension not built here, or ``import sami_rt`` having found a source tree
    without the compiled module)."""
    if _sampler is not None:
        return True, f"the C++ sampler loop (compiled: {Path(_sampler.__file__).name})"
    here = Path(__file__).resolve().parent  # sami_rt/sampling, where the compiled module lives
    pkg = here.parent
    built = sorted(p.name for p in here.glob("_sampler*") if p.suffix in (".so", ".pyd"))
    source = (pkg.parent / "cpp_ext" / "sampler.cpp").is_file()
    if built:
        why = f"{', '.join(built)} in {here} does not load ({_IMPORT_ERROR})"
    elif source:
        why = (f"`import sami_rt` found the source tree {pkg}, which holds no compiled sami_rt.sampling._sampler; "
               "build it there with `pip install -e .` (or `python setup.py build_ext --inplace`), or run from "
               "outside the checkout to use an installed sami-rt")
    else:
        why = f"the extension is not built in {pkg}; reinstall sami-rt with a C++ compiler and pybind11"
    return False, f"numpy (the C++ sampler loop is not available: {why})"


def run_loop(backend: StepFn, x: np.ndarray, coeffs: dict, seed, indices, progress=None, cancel=None,
             use_cpp: bool | None = None) -> np.ndarray:
    """Run the loop on x in place (C++ when built, unless use_cpp=False); raises Cancelled or SamplingError.
    ``coeffs``: ``c_x``, ``c_eps``, ``sigma`` and optionally ``c_x_prev``, ``c_eps_prev`` (multistep samplers).
    ``seed``: one integer for every row, or an integer array with one seed per row (rows of different
    requests in one batch); row b's noise is keyed by (its seed, indices[b], step)."""
    if x.dtype != np.float32 or not x.flags.c_contiguous or not x.flags.writeable:
        raise ValueError("x must be a writeable, C-contiguous float32 array")
    cpp = has_extension() if use_cpp is None else use_cpp
    if cpp and _sampler is None:
        raise RuntimeError("the C++ sampler extension sami_rt.sampling._sampler is not built; reinstall sami-rt with a "
                           "C++ compiler, or use the numpy loop")
    args = (backend, x, np.asarray(coeffs["c_x"], np.float64), np.asarray(coeffs["c_eps"], np.float64),
            np.asarray(coeffs["sigma"], np.float64), row_seeds(seed, len(x)), np.asarray(indices, dtype=np.int64))
    prev = [None if coeffs.get(k) is None else np.asarray(coeffs[k], np.float64) for k in ("c_x_prev", "c_eps_prev")]
    done = (_sampler.sample_loop if cpp else loop_numpy)(*args, progress, cancel, *prev)
    if done < len(coeffs["c_x"]):
        raise Cancelled(f"sampling cancelled after {done} of {len(coeffs['c_x'])} steps")
    return x
