"""``sami_rt.Runtime``: guided generation and encoding with a model bundle, on numpy and onnxruntime alone."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np

from sami_rt.backends import open_backend
from sami_rt.contract.bundle import (  # noqa: F401  (the model names are re-exported: sami_rt.runtime.resolve_model)
    DEFAULT_MODEL, MODELS_DIR, Bundle, is_finite_number, read_bundle, resolve_model, shipped_models)
from sami_rt.errors import InputError
from sami_rt.media.images import from_model, load_images
from sami_rt.sampling.loop import SamplingError, initial_noise, model_step, run_loop
from sami_rt.sampling.rng import GUIDE_STEP, batch_normals
from sami_rt.sampling.schedule import (FULL_INTERVAL, check_interval, dpmpp_2m_coefficients, guidance_weights, respace,
                                       step_coefficients)
from sami_rt.video.encode import encode_frames


def _show(value, width: int = 60) -> str:
    """``repr(value)``, cut to ``width`` characters (a request may hold a 400-digit integer)."""
    r = repr(value)
    return r if len(r) <= width else r[:width - 3] + "..."


SAMPLERS = ("ddpm", "ddim", "dpmpp-2m", "dpmpp-2m-sde")
DEFAULT_STEPS = {"ddpm": 100, "ddim": 50, "dpmpp-2m": 20, "dpmpp-2m-sde": 20}  # capped at the model's T


# Guidance scales: measured on disks-small (default 3; 16 samples of examples/guide.png, pixels at black or white):
# 2% at 3, 22% at 10, 89% at 30, 99.9% at 1,000, all of them from 10,000 on (benchmarks/RESULTS.md, issue 33).
FAR_SCALE = 3.0  # a scale more than this many times the bundle's default gets a note
MAX_SCALE = 1000.0  # above it a sample is nothing but saturated pixels: refused


def scale_too_large(scale) -> str:
    return (f"scale {scale:g} is above {MAX_SCALE:g}, where samples are nothing but black and white pixels (1 is the "
            "exact model; `sami-rt info` shows the model's default)")


def default_steps(bundle: Bundle, sampler: str) -> int:
    """The steps ``generate`` takes unless told: for ddpm the count the bundle records (its manifest's
    ``sampling_steps``: fewer than 100 measured to match 100, or more where 100 lose what the model is for),
    else the sampler's DEFAULT_STEPS, at most T."""
    if sampler == "ddpm" and bundle.manifest.sampling_steps:
        return bundle.manifest.sampling_steps
    return min(DEFAULT_STEPS[sampler], bundle.manifest.T)


@dataclass
class Samples:
    """Generated images: ``x`` in model space [N, C, H, W], ``z`` the latents that guided them (or None)."""

    x: np.ndarray
    z: np.ndarray | None
    seed: int
    steps: int
    sampler: str
    seconds: float
    notes: list[str] = field(default_factory=list)
    scale: float | None = None  # the guidance scale used (None: no latent; an all-zero mask keeps its scale)
    guide: np.ndarray | None = None  # the guide image as the model saw it [1, C, H, W] (None: no guide image)

    @property
    def images(self) -> np.ndarray:
        return from_model(self.x)


@dataclass
class GeneratePlan:
    """A checked ``generate`` call ready to sample (``Runtime.plan_generate``): its latents ``z`` [n, D] (None:
    unconditional), ``mask`` [1, D], the guidance ``scale`` and the sampler's ``coeffs`` (with ``guidance``, the
    per-step weights of the guidance ``interval``)."""

    n: int
    seed: int
    steps: int
    sampler: str
    eta: float
    scale: float
    z: np.ndarray | None
    mask: np.ndarray
    coeffs: dict
    notes: list[str]
    guide: np.ndarray | None = None  # the guide image in model space, loaded once [1, C, H, W]
    interval: tuple = FULL_INTERVAL  # the noise levels guided at ``scale`` (coeffs["guidance"] per step)

    def row_guidance(self, D: int) -> tuple:
        """(z, mask, scale) with one row per sample, as ``Runtime.sample_rows`` takes them (Nones unguided)."""
        if self.z is None:
            return None, None, None
        return self.z, np.broadcast_to(self.mask, (self.n, D)), np.full(self.n, self.scale, dtype=np.float32)

    def samples(self, x: np.ndarray, seconds: float) -> Samples:
        return Samples(x, self.z, self.seed, self.steps, self.sampler, seconds, self.notes,
                       None if self.z is None else float(self.scale), self.guide)


class Runtime:
    """A loaded model bundle and a backend to run it.

    Args:
        model: bundle directory, or the name of a bundle shipped inside the package (``shipped_models()``);
            ``None`` loads the default disks model.
        device: ``auto`` (fastest present: TensorRT, CUDA, then CPU; OpenVINO for ``precision="bf16"`` on a CPU
            with bf16), ``cpu`` (onnxruntime), ``cuda``, ``tensorrt`` or ``openvino`` (OpenVINO on the CPU).
        threads: intra-op threads for the backend (0 = ``OMP_NUM_THREADS`` where set, else its default).
        precision: ``auto`` (float16 denoiser on a GPU when the bundle has float16 graphs or engines, else
            float32), ``float32`` (``f32``), ``float16`` (``f16``, GPUs; the guidance runs in float32) or
            ``bfloat16`` (``bf16``: OpenVINO, where the CPU has AMX-BF16 or AVX512-BF16; elsewhere float32 and a
            note in ``backend.notes``).

    What runs is in ``backend.name``; fallbacks (skipped engines, no CUDA graphs) are in ``backend.notes``.
    """

    def __init__(self, model: str | os.PathLike | None = None, device: str = "auto", threads: int = 0,
                 precision: str = "auto"):
        self.bundle: Bundle = read_bundle(resolve_model(model))
        self.backend = open_backend(self.bundle, device, threads, precision)

    @property
    def latent_dim(self) -> int:
        return self.bundle.manifest.latent_dim

    def warm_up(self, max_batch: int, log=None) -> int:
        """Prepare the backend for calls of up to ``max_batch`` rows ahead of the first one: OpenVINO compiles its
        batch ladder (``OpenVinoBackend.warm_up``); the other backends need nothing. Returns the compiles done."""
        warm = getattr(self.backend, "warm_up", None)
        return warm(max_batch, log=log) if warm is not None else 0

    def __repr__(self) -> str:
        b = self.bundle
        return f"Runtime({b.root}, image {b.manifest.image.shape}, latent {b.manifest.latent_dim}, T={b.manifest.T}, {self.backend.name})"

    # ----------------------------------------------------------------------------------------- inputs
    def load_images(self, images, notes: list | None = None) -> np.ndarray:
        """Paths, a folder, uint8 pixel arrays (H, W[, C]) or a float batch [B, C, H, W] in [-1, 1] -> model
        input, through the bundle's preprocessing (``sami_rt.media.images.load_images``)."""
        return load_images(images, self.bundle.manifest.image, notes)

    # ----------------------------------------------------------------------------------------- encode
    def encode(self, images, batch: int = 256) -> tuple[np.ndarray, np.ndarray]:
        """Posterior means and variances [N, D] of q(z | x) for images (see load_images for the forms)."""
        x = self.load_images(images)
        mus, vars_ = [], []
        for lo in range(0, len(x), batch):
            mu, var = self.backend.encode(x[lo : lo + batch])
            mus.append(mu)
            vars_.append(var)
        return np.concatenate(mus), np.concatenate(vars_)

    def axes(self, images) -> list[tuple[int, float]]:
        """Latent dimensions ranked from most to least certain: (dimension, mean posterior variance)."""
        _, var = self.encode(images)
        v = var.mean(0)
        return [(int(d), float(v[d])) for d in np.argsort(v)]

    def axes_table(self, images) -> list[dict]:
        """``axes`` with the scale a traversal needs: per dimension (most certain first) the mean posterior
        variance and standard deviation, the mean of the posterior means, the code's spread (None when the
        bundle does not record it) and the posterior sd in spreads."""
        mu, var = self.encode(images)
        spread = self.code_spread()
        rows = []
        for d in np.argsort(var.mean(0)):
            sd = float(np.sqrt(var[:, d]).mean())
            sp = None if spread is None else float(spread[d])
            rows.append({"dim": int(d), "var": float(var[:, d].mean()), "sd": sd, "mean": float(mu[:, d].mean()),
                         "spread": sp, "sd_in_spreads": None if sp is None else sd / sp})
        return rows

    # --------------------------------------------------------------------------------------- generate
    def generate(self, guide=None, z: np.ndarray | None = None, n: int = 1, steps: int | None = None,
                 sampler: str = "ddpm", eta: float | None = None, seed: int = 0, scale: float | None = None,
                 mask: Sequence[int] | np.ndarray | None = None, guide_mean: bool = False, batch: int = 64,
                 progress: Callable[[int, int], None] | None = None, cancel: Callable[[], bool] | None = None,
                 use_cpp: bool | None = None, interval=None) -> Samples:
        """Draw ``n`` images.

        Args:
            guide: an image (path or array): every output shares its latent; z is a posterior sample per
                output (or the posterior mean with ``guide_mean``). A guide whose posterior variance lies far
                outside what the bundle recorded for its training images adds a note to ``Samples.notes``.
            z: explicit latents [n, D] (or [D]); neither guide nor z: unconditional samples.
            steps: sampling steps (default: for ddpm the bundle's ``default_steps`` where it records one, else
                100; 50 for ddim, 20 for dpmpp-2m and dpmpp-2m-sde; at most T), respaced evenly over the T levels.
            sampler: ``ddpm`` (ancestral, eta = 1), ``ddim`` (eta = 0 unless given), ``dpmpp-2m``
                (DPM-Solver++(2M), deterministic) or ``dpmpp-2m-sde`` (its SDE form); the last two take no eta.
            seed: sample i of this call uses noise keyed by (seed, i): the same image whatever ``batch`` (an
                integer from 0 to 2**64 - 1).
            scale: guidance scale s > 0 in eps_hat = eps - s sqrt(1 - abar_t) g (default: the bundle's
                ``default_scale``; 1 is the exact model).
            mask: latent dimensions to guide (indices, or a 0/1 vector of length D); others are left free.
            interval: (lo, hi), 0 <= lo < hi <= 1: the noise levels (fractions t / (T - 1), 0 the least noisy)
                where the steps guide at ``scale``; steps outside it guide at 1, the exact model (default: the
                bundle's ``sampling_interval``, (0, 1) unless its export set one).
        """
        t0 = time.perf_counter()
        p = self.plan_generate(guide, z, n, steps, sampler, eta, seed, scale, mask, guide_mean, interval)
        x = self.sample_plan(p, batch=batch, progress=progress, cancel=cancel, use_cpp=use_cpp)
        return p.samples(x, time.perf_counter() - t0)

    def plan_generate(self, guide=None, z=None, n: int = 1, steps: int | None = None, sampler: str = "ddpm",
                      eta: float | None = None, seed: int = 0, scale: float | None = None, mask=None,
                      guide_mean: bool = False, interval=None) -> GeneratePlan:
        """``generate``'s arguments checked (InputError, one sentence) and made ready to sample: the latents
        (the guide encoded, its posterior sample drawn), the mask and the sampler's coefficients. ``generate``
        is ``plan_generate`` then ``sample_rows``; ``sami_rt.scale.batching`` samples many plans' rows together."""
        b = self.bundle
        if sampler not in SAMPLERS:
            raise InputError(f"unknown sampler {sampler!r}; expected one of {', '.join(SAMPLERS)}")
        if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
            raise InputError(f"n must be a positive number of samples, got {n!r}")
        steps = default_steps(b, sampler) if steps is None else steps
        if isinstance(steps, bool) or not isinstance(steps, (int, np.integer)) or not 1 <= steps <= b.manifest.T:
            raise InputError(f"steps must be between 1 and the model's T={b.manifest.T}, got {steps!r}")
        multistep = sampler.startswith("dpmpp")
        if multistep and eta is not None:
            raise InputError(f"eta applies to the ddpm and ddim samplers only; {sampler} takes none, got {eta!r}")
        if eta is not None and (not is_finite_number(eta) or eta < 0):
            raise InputError(f"eta must be a finite number >= 0, got {_show(eta)}")
        eta = (1.0 if sampler == "ddpm" else 0.0) if eta is None else float(eta)
        scale = b.manifest.sampling_scale if scale is None else scale
        with np.errstate(over="ignore", under="ignore"):  # the guidance takes the scale as float32
            if not is_finite_number(scale) or not 0 < np.float32(scale) < np.inf:
                raise InputError(f"scale must be a finite number above 0 that float32 holds (at most 3.4e38; 1 is "
                                 f"the exact model), got {_show(scale)}")
        if scale > MAX_SCALE:
            raise InputError(scale_too_large(scale))
        interval = check_interval(b.manifest.sampling_interval if interval is None else interval)  # InputError
        if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or not 0 <= seed < 2**64:
            raise InputError(f"seed must be an integer from 0 to 2**64 - 1, got {_show(seed)}")
        notes: list[str] = []
        zz, guide_x = self._latents(guide, z, n, seed, guide_mean, notes)
        if zz is not None and scale > FAR_SCALE * b.manifest.sampling_scale:
            notes.append(f"guidance scale {scale:g} is more than {FAR_SCALE:g}x the model's {b.manifest.sampling_scale:g}: "
                         "samples break up into saturated speckle (disks-small: 22% of pixels black or white at 10, "
                         "89% at 30, against 2% at its 3)")
        m = self._mask(mask)
        levels = respace(b.manifest.T, int(steps))
        co = (dpmpp_2m_coefficients(b.manifest.abar, levels, sde=sampler == "dpmpp-2m-sde") if multistep
              else step_coefficients(b.manifest.abar, levels, eta))
        co["guidance"] = guidance_weights(co["t"], b.manifest.T, interval)
        return GeneratePlan(int(n), seed, int(steps), sampler, eta, scale, zz, m, co, notes, guide_x, interval)

    def sample_plan(self, p: GeneratePlan, batch: int = 64, progress=None, cancel=None, use_cpp=None) -> np.ndarray:
        """The images of one plan (``generate`` after ``plan_generate``): rows 0..n-1 keyed by its seed."""
        return self.sample_rows(p.coeffs, p.seed, np.arange(p.n, dtype=np.int64), *p.row_guidance(self.latent_dim),
                                batch=batch, progress=progress, cancel=cancel, use_cpp=use_cpp,
                                where=lambda lo, hi: f"samples {lo}..{hi - 1}, seed {p.seed}")

    def sample_rows(self, coeffs: dict, seed, indices: np.ndarray, z=None, mask=None, scale=None, batch: int = 64,
                    progress=None, cancel=None, use_cpp=None, where=None) -> np.ndarray:
        """Images [N, C, H, W] in [-1, 1] for N rows, one loop call per ``batch`` rows: row r's noise keyed by
        (``seed`` (an integer, or ``seed[r]``), ``indices[r]``), guided by ``z[r]``, ``mask[r]`` and
        ``scale[r]`` ([N, D], [N, D], [N]; z None: unconditional). ``where(lo, hi)`` names rows lo..hi-1 in
        the SamplingError of a step that produced NaN or infinity."""
        shape, ts, N = self.bundle.manifest.image.shape, coeffs["t"], len(indices)
        per_row = np.ndim(seed) > 0
        out = np.empty((N, *shape), dtype=np.float32)
        chunks = -(-N // batch)
        for k, lo in enumerate(range(0, N, batch)):
            hi = min(N, lo + batch)
            B, idx = hi - lo, np.asarray(indices[lo:hi], dtype=np.int64)
            s = seed[lo:hi] if per_row else seed
            x = initial_noise(s, idx, shape)
            guided = () if z is None else (*(np.ascontiguousarray(a[lo:hi]) for a in (z, mask, scale)),
                                           coeffs.get("guidance"))
            backend = model_step(self.backend, ts, B, *guided)

            def prog(i, total, k=k):
                if progress is not None:
                    progress(k * len(ts) + i, len(ts) * chunks)

            try:
                run_loop(backend, x, coeffs, s, idx, prog, cancel, use_cpp)
            except SamplingError as e:
                what = where(lo, hi) if where else f"rows {lo}..{hi - 1}"
                raise SamplingError(f"{e} (backend: {self.backend.name}; {what})") from None
            out[lo:hi] = np.clip(x, -1.0, 1.0)
        return out

    def _latents(self, guide, z, n, seed, guide_mean, notes):
        """(latents [n, D] or None, the guide image in model space or None)."""
        D = self.bundle.manifest.latent_dim
        if guide is not None and z is not None:
            raise InputError("give either a guide image or latents z, not both")
        if z is not None:
            z = np.asarray(z, dtype=np.float32)
            if z.shape == (D,):
                z = np.broadcast_to(z, (n, D))
            if z.shape != (n, D):
                raise InputError(f"z must have shape [{n}, {D}] (or [{D}]), got {list(z.shape)}")
            if not np.all(np.isfinite(z)):
                raise InputError("z holds NaN or infinite values")
            return np.ascontiguousarray(z), None
        if guide is None:
            return None, None
        x = self.load_images(guide, notes)
        if len(x) != 1:
            raise InputError(f"the guide must be one image, got {len(x)}")
        mu, var = self.backend.encode(x)
        self._check_guide(guide, var, notes)
        if guide_mean:
            return np.repeat(mu, n, axis=0).astype(np.float32), x
        noise = batch_normals(seed, np.arange(n), GUIDE_STEP, (D,))  # Philox, as the sampler's noise
        return (mu + np.sqrt(var) * noise).astype(np.float32), x

    def _check_guide(self, guide, var: np.ndarray, notes: list) -> None:
        """A note when the guide's posterior variance lies far outside the range that training-distribution
        images gave (``VarianceRange.far_outside``; bundles that record no range give none)."""
        r = self.bundle.manifest.variance_range
        s = None if r is None else r.far_outside(var)
        if s is not None:
            name = f"guide {guide}" if isinstance(guide, (str, os.PathLike)) else "the guide"
            notes.append(f"{name} looks unlike the model's training images (mean log posterior variance {s:.2f}, "
                         f"outside the range {r.low:.2f} .. {r.high:.2f} seen in training); samples may not "
                         "resemble it")

    def _mask(self, mask) -> np.ndarray:
        D = self.bundle.manifest.latent_dim
        if mask is None:
            return np.ones((1, D), dtype=np.float32)
        m = np.asarray(mask)
        if m.dtype.kind in "bf":  # booleans and floats are a 0/1 vector, never indices (0.0 is not dimension 0)
            if m.shape != (D,) or not set(np.unique(m).tolist()) <= {0, 1}:
                raise InputError(f"a 0/1 mask must have {D} entries of 0 or 1, got {m.reshape(-1)[:12].tolist()}")
            vec = m.astype(np.float32)
        else:  # integers: the dimensions to guide (Python integers beyond int64 make an object array)
            flat = m.reshape(-1).tolist()
            bad = [v for v in flat if isinstance(v, bool) or not isinstance(v, int) or not 0 <= v < D]
            if not flat or bad:
                raise InputError(f"mask dimensions must be in 0..{D - 1}, got {_show((bad or flat)[:12])}")
            idx = np.asarray(flat, dtype=np.int64)
            vec = np.zeros(D, dtype=np.float32)
            vec[idx] = 1.0
        return vec[None]

    # ---------------------------------------------------------------------------------- latent tools
    def interpolate(self, a, b, n: int = 8, **kw) -> Samples:
        """Decode n points on the line between the posterior means of images a and b."""
        mu, _ = self.encode([a, b] if not isinstance(a, np.ndarray) else np.stack([a, b]))
        w = np.linspace(0.0, 1.0, n, dtype=np.float32)[:, None]
        return self.generate(z=(1 - w) * mu[0] + w * mu[1], n=n, **kw)

    def code_spread(self) -> np.ndarray | None:
        """The spread of the code per axis: the standard deviation of the posterior means of the held-out
        images the run was evaluated on (the manifest's ``evaluation.mean_std``); None when not recorded."""
        return self.bundle.manifest.code_spread

    def axis_scale(self, unit: str, var: np.ndarray | None = None) -> np.ndarray:
        """Per-axis length of one unit: ``spread`` (code_spread) or ``sd`` (sqrt of the posterior variance
        ``var`` of one image)."""
        D = self.bundle.manifest.latent_dim
        if unit == "sd":
            return np.sqrt(np.asarray(var, np.float64).reshape(D))
        if unit == "spread":
            s = self.code_spread()
            if s is None:
                raise InputError("this bundle records no code spread (export it from an evaluated run); "
                                 "use unit 'sd' or 'value'")
            return s
        raise InputError(f"unit must be spread, sd or value, got {unit!r}")  # 'value' is traverse's own case

    def traverse_unit(self, unit: str | None = None) -> str:
        """The unit a traversal uses: ``unit`` itself, or by default 'spread' where the bundle records the
        code's spread and 'sd' where it does not."""
        return unit or ("spread" if self.code_spread() is not None else "sd")

    def traverse(self, image, axis: int, values: Sequence[float], unit: str | None = None, **kw) -> Samples:
        """Decode the image's posterior mean with dimension ``axis`` moved by each of ``values``, in units of
        the code's spread on that axis (``unit='spread'``), of the image's posterior standard deviation on it
        (``'sd'``), or set to the values themselves (``'value'``); default ``traverse_unit()``."""
        unit = self.traverse_unit(unit)
        D = self.bundle.manifest.latent_dim
        if not 0 <= axis < D:
            raise InputError(f"axis must be in 0..{D - 1}, got {axis}")
        mu, var = self.encode(image)
        z = np.repeat(mu[:1], len(values), axis=0)
        v = np.asarray(values, dtype=np.float64)
        if unit == "value":
            z[:, axis] = v.astype(np.float32)
        else:
            z[:, axis] = (mu[0, axis] + v * self.axis_scale(unit, var[:1])[axis]).astype(np.float32)
        return self.generate(z=z, n=len(values), **kw)

    def encode_video(self, path, every: int = 1, batch: int = 64, progress=None, allow_luma: bool = True):
        """Per-frame posterior means and variances of a video and the curvature of its latent and pixel
        trajectories (``sami_rt.video.encode.encode_frames``). ``allow_luma``: a one-channel model may read a
        yuv420p video's frames as the decoder's luma plane, checked on the first frame against the BGR
        route (identical where the colours are neutral, within a few grey levels elsewhere; faster, since
        the conversion of every frame to BGR is skipped); False decodes every frame to BGR and converts it
        as an image is converted."""
        be = self.backend
        return encode_frames(be.stream_encode, self.bundle.manifest.image, path, every, batch, progress,
                            allow_luma)
