"""Instruments for a disks model (issue 29): is the x-y map of the code one-to-one, does decoding from a posterior
mean put the disk back where it was, does a straight line between two codes move one disk from A to B.

``python -m train.disk_checks MODEL_OR_RUN_DIR [--out DIR]``: a shipped bundle's name (``disks-3d``) or a bundle
directory runs through ``sami_rt.Runtime`` (no torch); a training run directory through its EMA weights in
PyTorch, with the same sampling loop (sami_rt's, noise keyed by (seed, row index)). The evaluation of a disks run
calls ``evaluate_disks``. Written (atomically) to the output directory: ``disk_checks.json``, ``fold.png``,
``decode.png``, ``interpolation_lines.png``.

- **Fold fraction.** Disks on a 41 x 41 grid of centres over [r, size - r] at three backgrounds (0.1, 0.5 and
  0.9 of the background range) are encoded. z_x and z_y are the two code axes assigned to x and y by the
  evaluation's rule (``best_distinct_axes``: one different axis per factor, x, y and background, maximising the
  summed single-axis R^2 on these grid images). Per grid cell, the Jacobian of (x, y) -> (z_x, z_y) by finite
  differences of the posterior means (each edge's difference averaged with the opposite edge's); its
  determinant's sign is the cell's orientation. The fold fraction is the share of cells whose orientation is
  the opposite of the majority's (per background against that background's majority; overall against the
  majority over the three; cells with a determinant of exactly 0 are neither: ``flat_fraction``). The same is reported in the plane of the linear read-out (least-squares predictions of x
  and y from all axes, ``readout``), which does not depend on how x and y share axes.
- **Angles.** A least-squares affine fit (z_x, z_y) ~ A (x, y) + b over the grid: ``angle_x`` and ``angle_y``
  are the directions of increasing disk x and y in the (z_x, z_y) plane, in degrees counter-clockwise from
  +z_x; ``rotation`` is angle_x folded into [-90, 90) (0: x lies along its axis), ``between`` is
  angle_y - angle_x in (-180, 180] (+-90: orthogonal; the sign is the handedness).
- **Decode from the mean.** A 7 x 7 grid of centres at the same three backgrounds, ``samples`` draws each:
  each disk is encoded and a sample is generated guided by its posterior mean at the model's default scale (the
  bundle's, or the run's ``sampling_scale``) and default sampler and steps; the generated disk's centre is found
  from its pixels (``find_disks``); the error is its distance in px from the true centre (NaN, counted as
  ``no_disk``, where no blob is found).
- **Interpolation.** ``pairs`` pairs of fresh disks (centres at least 8 px apart, both with a contrast of at
  least 0.2 against their background); 10 codes evenly along z = (1 - l) mu(A) + l mu(B), all ten decoded with the
  same noise (one seed per line, the same row index). A line passes when every image is one disk (exactly one
  blob of >= 3 4-connected pixels beyond 0.3 of the disk's contrast against the median pixel, whose strongest
  pixel reaches ``MIN_PEAK`` of that contrast), both ends lie within max(2 px, a quarter of |AB|) of their own
  disks, the centre's projection on A -> B never goes back by more than 5% of |AB| and no step between
  neighbours exceeds 0.35 |AB| (``judge_path``).
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from sami_rt.sampling.schedule import FULL_INTERVAL, check_interval
from train.factor_figures import best_distinct_axes, find_disks, judge_path
from train.io import write_json

FOLD_GRID, DECODE_GRID, POINTS = 41, 7, 10
BG_FRACTIONS = (0.1, 0.5, 0.9)  # the three backgrounds, as fractions of the background range
MIN_PEAK = 0.6  # an interpolated disk's strongest pixel, as a fraction of the disk's contrast
MAX_STEP, MIN_DISTANCE, MIN_CONTRAST = 0.35, 8.0, 0.2


@dataclass(frozen=True)
class Geometry:
    """The disks a model was trained on: image side, radius, disk intensity, background range (intensities 0..1)."""

    size: int = 32
    radius: float = 4.0
    foreground: float = 1.0
    bg_min: float = 0.0
    bg_max: float = 0.6

    @classmethod
    def from_config(cls, c) -> "Geometry":
        get = c.get if isinstance(c, dict) else lambda k, d=None: getattr(c, k, d)
        return cls(int(get("image_size", 32)), float(get("disk_radius", 4.0)), float(get("disk_foreground", 0.5)),
                   float(get("disk_bg_min", 0.0)), float(get("disk_bg_max", 1.0)))

    def backgrounds(self) -> np.ndarray:
        return self.bg_min + np.asarray(BG_FRACTIONS) * (self.bg_max - self.bg_min)

    def positions(self, n: int) -> np.ndarray:
        return np.linspace(self.radius, self.size - self.radius, n)

    def render(self, f) -> np.ndarray:
        """Images [N, 1, H, W] float32 in [-1, 1] of factors [N, 3] (x, y, background)."""
        from sami_rt.media.disks import render_disks

        return (render_disks(f, self.size, self.radius, self.foreground) * 2 - 1).astype(np.float32)[:, None]


class RuntimeModel:
    """A bundle through ``sami_rt.Runtime``: ``encode`` posterior means, ``decode`` latents with noise keyed by
    (seed of the row, index 0), so rows with one seed share their noise."""

    def __init__(self, model, threads: int = 1, steps: int | None = None, sampler: str = "ddpm",
                 scale: float | None = None, interval=None):
        from sami_rt.runtime import Runtime, default_steps

        self.rt = Runtime(model, device="cpu", threads=threads)
        b = self.rt.bundle
        self.name, self.latent_dim = Path(b.root).name, b.manifest.latent_dim
        self.geometry = Geometry.from_config(b.manifest.training.get("config") or {})
        self.sampler = sampler
        self.steps = int(steps or default_steps(b, sampler))
        self.scale = float(b.manifest.sampling_scale if scale is None else scale)
        self.interval = tuple(b.manifest.sampling_interval if interval is None else interval)

    def encode(self, x: np.ndarray, batch: int = 256) -> np.ndarray:
        return np.concatenate([self.rt.backend.encode(x[lo:lo + batch])[0] for lo in range(0, len(x), batch)])

    def decode(self, z: np.ndarray, seeds: np.ndarray) -> np.ndarray:
        p = self.rt.plan_generate(z=z, n=len(z), steps=self.steps, sampler=self.sampler, scale=self.scale,
                                  interval=self.interval)
        zz, mask, scale = p.row_guidance(self.latent_dim)
        return self.rt.sample_rows(p.coeffs, np.asarray(seeds, np.uint64), np.zeros(len(z), np.int64), zz, mask, scale)


class TorchModel(RuntimeModel):
    """A training run's model in PyTorch behind the same interface (the same sampling loop and noise)."""

    def __init__(self, model, cfg, abar, steps: int = 100, sampler: str = "ddpm", scale: float | None = None,
                 name: str = "run", interval=None, device: str = "cpu"):
        self.model, self.abar, self.device = model.to(device), np.asarray(abar, np.float64), device
        self.interval = FULL_INTERVAL if interval is None else check_interval(interval)
        self.name, self.latent_dim, self.geometry = name, cfg.latent_dim, Geometry.from_config(cfg)
        self.sampler, self.steps = sampler, int(min(steps, len(self.abar)))
        self.scale = float(cfg.sampling_scale if scale is None else scale)

    def encode(self, x: np.ndarray, batch: int = 256) -> np.ndarray:
        import torch

        with torch.no_grad():
            mu = [self.model.encoder(torch.from_numpy(x[lo:lo + batch]).to(self.device))[0].cpu().numpy()
                  for lo in range(0, len(x), batch)]
        return np.concatenate(mu).astype(np.float64)

    def guided_eps(self, x_t, t, z, mask, scale):  # the backends' interface, numpy in and out
        import torch

        from sami_reference.guidance import guided_eps

        def dev(a):
            return torch.from_numpy(np.asarray(a)).to(self.device)

        s1m = dev(np.sqrt(1 - self.abar[t])).float()
        out = guided_eps(self.model.denoiser, self.model.encoder, dev(np.array(x_t)), dev(t), dev(z), s1m, dev(scale),
                         dev(mask))
        return out.detach().cpu().numpy()

    def decode(self, z: np.ndarray, seeds: np.ndarray, batch: int | None = None) -> np.ndarray:
        """Images of latents ``z`` (noise keyed by (seed, row 0), so the batch size changes nothing: 64 rows a
        call on the CPU, 256 on an accelerator unless ``batch`` is given)."""
        from sami_rt.sampling.loop import initial_noise, model_step, run_loop
        from sami_rt.sampling.schedule import dpmpp_2m_coefficients, guidance_weights, respace, step_coefficients

        lv = respace(len(self.abar), self.steps)
        co = (dpmpp_2m_coefficients(self.abar, lv, sde=self.sampler.endswith("sde")) if self.sampler.startswith("dpmpp")
              else step_coefficients(self.abar, lv, 1.0 if self.sampler == "ddpm" else 0.0))
        z = np.asarray(z, np.float32)
        batch = batch or (64 if self.device == "cpu" else 256)
        weights = guidance_weights(co["t"], len(self.abar), self.interval)
        seeds, out = np.asarray(seeds, np.uint64), []
        for lo in range(0, len(z), batch):
            zz, s = np.ascontiguousarray(z[lo:lo + batch]), seeds[lo:lo + batch]
            idx = np.zeros(len(zz), np.int64)
            x = initial_noise(s, idx, (1, self.geometry.size, self.geometry.size))
            step = model_step(self, co["t"], len(zz), zz, np.ones_like(zz), np.full(len(zz), self.scale, np.float32),
                              weights)
            out.append(np.clip(run_loop(step, x, co, s, idx), -1, 1))
        return np.concatenate(out)


# ------------------------------------------------------------------------------------------ the measures
def cell_orientation(P: np.ndarray) -> np.ndarray:
    """Signs [n-1, n-1] of the Jacobian determinant of a map sampled on a grid, P [n, n, 2] (rows: y, columns: x),
    by finite differences over each cell (each edge averaged with the opposite one)."""
    dx = 0.5 * ((P[:-1, 1:] - P[:-1, :-1]) + (P[1:, 1:] - P[1:, :-1]))
    dy = 0.5 * ((P[1:, :-1] - P[:-1, :-1]) + (P[1:, 1:] - P[:-1, 1:]))
    return np.sign(dx[..., 0] * dy[..., 1] - dx[..., 1] * dy[..., 0])


def fold_fraction(signs: np.ndarray) -> tuple[float, int]:
    """(share of cells whose orientation is the opposite of the majority's, the majority's sign); a cell whose
    determinant is exactly 0 (a flat map, as an untrained encoder's) is neither."""
    s = np.asarray(signs).ravel()
    major = 1 if (s > 0).sum() >= (s < 0).sum() else -1
    return float(np.mean(s == -major)), major


def axis_angles(f: np.ndarray, P: np.ndarray) -> dict:
    """Directions of increasing x and y in the code plane (see the module's docstring), from points P [N, 2]
    of factors f [N, >=2]."""
    A = np.linalg.lstsq(np.c_[f[:, :2], np.ones(len(f))], P, rcond=None)[0][:2].T  # [code, factor]
    ax, ay = (float(np.degrees(np.arctan2(A[1, k], A[0, k]))) for k in (0, 1))
    return {"angle_x_deg": ax, "angle_y_deg": ay, "rotation_deg": (ax + 90) % 180 - 90,
            "between_deg": -((ax - ay + 180) % 360 - 180)}


def fold_check(m, n: int = FOLD_GRID) -> dict:
    g = m.geometry
    pos, bgs = g.positions(n), g.backgrounds()
    f = np.array([[x, y, b] for b in bgs for y in pos for x in pos])
    mu = m.encode(g.render(f)).astype(np.float64)
    K = 3 if mu.shape[1] >= 3 else 2
    r2 = np.nan_to_num(np.corrcoef(np.c_[mu, f[:, :K]].T)[: mu.shape[1], mu.shape[1]:] ** 2)
    axes = best_distinct_axes(r2)
    sd = mu.std(0) + 1e-12
    W = np.linalg.lstsq(np.c_[(mu - mu.mean(0)) / sd, np.ones(len(mu))], f[:, :2], rcond=None)[0]
    planes = {"axes": mu[:, axes[:2]], "readout": np.c_[(mu - mu.mean(0)) / sd, np.ones(len(mu))] @ W}
    out = {"grid": n, "backgrounds": bgs.tolist(), "z_x": int(axes[0]), "z_y": int(axes[1]),
           "axis_r2": {"x": float(r2[axes[0], 0]), "y": float(r2[axes[1], 1])},
           "readout_r2": [float(1 - ((planes["readout"][:, k] - f[:, k]) ** 2).sum() / ((f[:, k] - f[:, k].mean()) ** 2).sum())
                          for k in (0, 1)]}
    maps = {}
    for name, P in planes.items():
        sg = np.stack([cell_orientation(P[i * n * n:(i + 1) * n * n].reshape(n, n, 2)) for i in range(len(bgs))])
        frac, major = fold_fraction(sg)
        out[name] = {"fold_fraction": frac, "majority": major, "flat_fraction": float(np.mean(sg == 0)),
                     "fold_fraction_per_background": [fold_fraction(s)[0] for s in sg],
                     **axis_angles(f, P),
                     "angles_per_background": [axis_angles(f[i * n * n:(i + 1) * n * n], P[i * n * n:(i + 1) * n * n])
                                               for i in range(len(bgs))]}
        maps[name] = (P.reshape(len(bgs), n, n, 2), sg, major)
    return out, maps


def draw_seeds(seed: int, part: int, n: int) -> np.ndarray:
    """The sampling seeds of ``n`` rows of one check (``part`` 0: decoding, 1: interpolation) in the draw ``seed``:
    seed * 2**32 + part * 2**31 + row, so no two draws or checks share a row's noise (draws 0 and 1 are a
    validation and a report draw of the same grid)."""
    return (np.uint64(seed) * np.uint64(2**32) + np.uint64(part) * np.uint64(2**31)
            + np.arange(n, dtype=np.uint64))


def decode_check(m, n: int = DECODE_GRID, samples: int = 2, seed: int = 0) -> tuple[dict, tuple]:
    g = m.geometry
    pos, bgs = g.positions(n), g.backgrounds()
    f = np.array([[x, y, b] for b in bgs for y in pos for x in pos for _ in range(samples)])
    mu = m.encode(g.render(f))
    imgs = m.decode(mu, draw_seeds(seed, 0, len(f)))
    counts, centres = find_disks(imgs[:, 0], g.foreground)
    err = np.hypot(*(centres - f[:, :2]).T)
    inner = np.all((f[:, :2] > pos[0] + 1e-9) & (f[:, :2] < pos[-1] - 1e-9), axis=1)
    ok = np.isfinite(err)
    e = err[ok]
    return ({"grid": n, "samples_per_position": samples, "backgrounds": bgs.tolist(), "images": len(f),
             "scale": m.scale, "interval": list(getattr(m, "interval", FULL_INTERVAL)), "sampler": m.sampler,
             "steps": m.steps, "no_disk": int((~ok).sum()),
             "several_blobs": int((counts > 1).sum()),
             "median_px": _median(err),
             "mean_px": float(np.mean(e)) if len(e) else float("nan"),
             "max_px": float(np.max(e)) if len(e) else float("nan"),
             "within_2px": float(np.mean(err <= 2.0)),
             "median_px_inner": _median(err[inner]),  # positions off the grid's outer ring
             "median_px_per_background": [_median(err[f[:, 2] == b]) for b in bgs]},
            (f, centres, err))


def _median(v) -> float:
    v = np.asarray(v, float)
    return float(np.median(v[np.isfinite(v)])) if np.isfinite(v).any() else float("nan")


def pick_pairs(g: Geometry, pairs: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Factors [pairs, 3] of disks A and B: fresh uniform disks, both with contrast >= MIN_CONTRAST, centres at
    least MIN_DISTANCE apart."""
    rng = np.random.default_rng([seed, 29])
    A, B = [], []
    while len(A) < pairs:
        f = np.c_[rng.uniform(g.radius, g.size - g.radius, (2, 2)), rng.uniform(g.bg_min, g.bg_max, 2)]
        if np.all(np.abs(g.foreground - f[:, 2]) >= MIN_CONTRAST) and np.hypot(*(f[0, :2] - f[1, :2])) >= MIN_DISTANCE:
            A.append(f[0])
            B.append(f[1])
    return np.array(A), np.array(B)


def judge_line(counts, centres, peaks, ends, min_peak: float = MIN_PEAK) -> dict:
    """``judge_path`` (one blob, ends, monotone, steps) and each blob's strongest pixel >= ``min_peak``."""
    r = judge_path(np.asarray(counts), np.asarray(centres, float), MAX_STEP, np.asarray(ends, float))
    r["contrast"] = bool(np.all(np.nan_to_num(np.asarray(peaks, float)) >= min_peak))
    r["passed"] = bool(r["passed"] and r["contrast"])
    r["verdict"] = ("pass" if r["passed"] else "blobs" if not r["one_blob"] else "faint" if not r["contrast"]
                    else "goes back" if not r["monotone"] else "misses an end" if not r["reaches_ends"] else "jump")
    return r


def judge_images(imgs: np.ndarray, ends: np.ndarray, foreground: float) -> dict:
    """One line's images [P, H, W] in [-1, 1] against the true centres ends [2, 2]."""
    counts, centres, peaks = find_disks(imgs, foreground, peaks=True)
    return {**judge_line(counts, centres, peaks, ends), "centres": np.round(centres, 3).tolist()}


def interpolation_check(m, pairs: int = 50, points: int = POINTS, seed: int = 0) -> tuple[dict, tuple]:
    g = m.geometry
    A, B = pick_pairs(g, pairs, seed)
    mu = m.encode(g.render(np.r_[A, B]))
    lam = np.linspace(0, 1, points)[None, :, None]
    z = ((1 - lam) * mu[:pairs, None] + lam * mu[pairs:, None]).reshape(-1, mu.shape[1])
    imgs = m.decode(z, np.repeat(draw_seeds(seed, 1, pairs), points)).reshape(pairs, points, g.size, g.size)
    lines = [judge_images(imgs[i], np.stack([A[i, :2], B[i, :2]]), g.foreground) for i in range(pairs)]
    verdicts = [r["verdict"] for r in lines]
    return ({"pairs": pairs, "points": points, "scale": m.scale,
             "interval": list(getattr(m, "interval", FULL_INTERVAL)), "sampler": m.sampler, "steps": m.steps,
             "passed": verdicts.count("pass"), "verdicts": {v: verdicts.count(v) for v in sorted(set(verdicts))},
             "min_peak": MIN_PEAK, "max_step_allowed": MAX_STEP, "min_distance_px": MIN_DISTANCE,
             "lines": [{"a": A[i].tolist(), "b": B[i].tolist(), **lines[i]} for i in range(pairs)]},
            (A, B, imgs, verdicts))


def run_checks(m, out_dir, pairs: int = 50, decode_samples: int = 2, seed: int = 0, log=None) -> dict:
    """All three instruments on model ``m``; writes disk_checks.json and the figures into ``out_dir``."""
    from train.disk_figures import plot_decode, plot_fold, plot_lines

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    say = log or (lambda s: print(s, file=sys.stderr, flush=True))
    res = {"model": m.name, "latent_dim": m.latent_dim, "geometry": vars(m.geometry), "seed": seed}
    res["fold"], maps = fold_check(m)
    say(f"fold fraction {res['fold']['axes']['fold_fraction']:.3f} (z{res['fold']['z_x']}, z{res['fold']['z_y']})")
    plot_fold(maps, res["fold"], m.geometry, out_dir / "fold.png", m.name)
    if decode_samples > 0:
        res["decode"], dec = decode_check(m, samples=decode_samples, seed=seed)
        say(f"decode from the mean: median {res['decode']['median_px']:.2f} px, max {res['decode']['max_px']:.2f} px")
        plot_decode(dec, res["decode"], m.geometry, out_dir / "decode.png", m.name)
    if pairs > 0:
        res["interpolation"], lines = interpolation_check(m, pairs, seed=seed)
        say(f"interpolation: {res['interpolation']['passed']}/{pairs} lines pass")
        plot_lines(lines, res["interpolation"], m.geometry, out_dir / "interpolation_lines.png", m.name)
    res["summary"] = summary(res)
    write_json(out_dir / "disk_checks.json", res)
    return res


def summary(res: dict) -> dict:
    fo = res["fold"]["axes"]
    s = {"fold_fraction": round(fo["fold_fraction"], 3),
         "fold_fraction_per_background": [round(v, 3) for v in fo["fold_fraction_per_background"]],
         "xy_rotation_deg": round(fo["rotation_deg"], 1), "xy_between_deg": round(fo["between_deg"], 1)}
    if "decode" in res:
        s.update(decode_median_px=round(res["decode"]["median_px"], 2), decode_max_px=round(res["decode"]["max_px"], 2))
    if "interpolation" in res:
        s["interpolation_default_scale"] = f"{res['interpolation']['passed']}/{res['interpolation']['pairs']}"
    return s


def evaluate_disks(model, cfg, abar, run_dir, pairs: int = 50, steps: int = 100, scale=None, stages=None) -> dict:
    """The evaluation's stage: the checks on a run's model, into the run directory; returns the summary."""
    what = f"disk checks (fold, decode from the mean, {pairs} lines)"
    if stages is not None:
        stages.begin(what)
    res = run_checks(TorchModel(model, cfg, abar, steps, scale=scale, name=Path(run_dir).name), run_dir, pairs,
                     log=(lambda s: stages.log("  " + s)) if stages is not None else None)
    if stages is not None:
        stages.done(what)
    return res["summary"]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("model", help="a shipped bundle's name (disks-3d, disks-small), a bundle directory or a run directory")
    ap.add_argument("--out", type=Path, help="output directory (default: a run directory itself; for a bundle "
                    "./disk_checks/NAME)")
    ap.add_argument("--pairs", type=int, default=50, help="interpolation lines (default 50; 0 skips them)")
    ap.add_argument("--decode-samples", type=int, default=2,
                    help="samples per decoded grid position (default 2; 0 skips decoding: a quick look at a fold)")
    ap.add_argument("--steps", type=int, help="sampling steps (default: the bundle's for its sampler; a run: 100)")
    ap.add_argument("--sampler", default="ddpm", choices=("ddpm", "ddim", "dpmpp-2m", "dpmpp-2m-sde"))
    ap.add_argument("--scale", type=float, help="guidance scale (default: the bundle's or the run's)")
    ap.add_argument("--interval", type=float, nargs=2, metavar=("LO", "HI"),
                    help="guide at --scale only at noise levels t / (T - 1) in [LO, HI], at 1 elsewhere (default: "
                         "the bundle's interval; a run: all levels)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1, help="threads (default 1)")
    ap.add_argument("--device", default="cpu", help="a run directory's torch device (cpu, cuda; default cpu)")
    a = ap.parse_args(argv)
    src = Path(a.model)
    if (src / "config.json").is_file() and (src / "checkpoint.pt").is_file():
        import torch

        from train.loop import load_run

        torch.set_num_threads(a.threads)
        model, cfg, abar, _ = load_run(src)
        m = TorchModel(model, cfg, abar.numpy(), a.steps or 100, a.sampler, a.scale, src.resolve().name, a.interval,
                       a.device)
        out = a.out or src
    else:
        m = RuntimeModel(a.model, a.threads, a.steps, a.sampler, a.scale, a.interval)
        out = a.out or Path("disk_checks") / m.name
    res = run_checks(m, out, a.pairs, a.decode_samples, a.seed)
    print(json.dumps(res["summary"], indent=2))
    print(f"written to {out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
