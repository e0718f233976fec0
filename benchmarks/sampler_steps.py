"""Quality against steps for every sampler (issue 19): guide adherence, conditioned variability, malformed
samples and speed at 5-100 steps, against the DDPM 100 default, on fresh guides.

    python -m benchmarks.sampler_steps [--model M] [--guides 32] [--per-guide 4] [--seed 0]
        [--out benchmarks/sampler_steps] [--time-repeats 3] [--cli-repeats 3]

Guides: ``--guides`` disks drawn as the model's training data draws them (``sami_rt.media.disks.render_disks``, the
size, radius, foreground and background range of the bundle's training configuration; centre uniform with the
whole disk inside the image, background uniform in its range), rendered to uint8 pixels like
``examples/make_examples.py``. Their factors come from numpy's PCG64 seeded with [19, seed], a generator that
training and evaluation never use (they draw their disks from torch.Generator seeded with the run's seed and
data_seed + 1,000,003); 4,000 more disks from the same stream are the test set that the variability ratio
is taken against. Guide k's samples use ``generate(..., seed=100000 * seed + k)`` in every setting, so every
setting starts from the same noise and the same posterior draws of z.

Settings: each sampler in ``sami_rt.runtime.SAMPLERS`` at 5, 10, 15, 20, 25, 50 and 100 steps, the bundle's
guidance scale, and a control: DDPM 100 again with other seeds (guide k: seed + 50,000), which shows how far
two draws of the reference differ. Per sample, with ``sami_rt.media.disks.disk_centres`` and the median-pixel
background as ``benchmarks/guide_adherence.py`` measures them:

- distance (px) of the disk centre from the guide's true centre: median and mean over all samples (a sample
  with no centre at all counts as infinitely far in the median and is left out of the mean), fraction
  within 2 px;
- background error: |median pixel / 255 - the guide's background|, mean;
- conditioned variability: per guide, the mean squared distance of its samples from their own mean (per
  pixel, model space [-1, 1]; train/evaluate.py's ``variability``), averaged over guides; shown over the
  test set's (the evaluation's ``cond_variability_ratio``; with few samples per guide it reads lower than the
  evaluation's 16-sample figure) and relative to DDPM 100's;
- malformed: a non-finite pixel, or not exactly one disk (``train.factor_figures.find_disks``: 4-connected
  blobs of >= 3 pixels beyond 0.3 of the disk's contrast over the median pixel; none when the contrast is
  under 0.1), or a disk coverage (``disk_centres``' coverage summed) outside 0.5-1.5 of the guides' own;
- time: wall seconds of ``Runtime.generate(guide, n=16)`` (guide 0) in-process, median of ``--time-repeats``
  rounds that visit the settings in a shuffled order each round; and of the whole ``sami-rt generate --guide
  G -n 16 -o F`` command (process start, model load, grid written) for DDPM 100 and the settings that match it.

Spread: each figure's standard error is the standard deviation of 2,000 bootstrap resamples over guides.
A setting matches DDPM 100 on a figure unless the paired bootstrap 95% interval of (setting - DDPM 100)
(same resampled guides; a ratio for the variability) lies wholly on the worse side: a higher distance, a
lower fraction within 2 px, a higher background error, a higher variability. It must also have no more
malformed samples than DDPM 100 (counts). The recommendation is the fastest setting that matches on all
of them. Writes OUT/sampler_steps.json, OUT/sampler_steps.md and OUT/sampler_steps.png; progress on stderr.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from benchmarks.sampler_steps_report import REF, finite_or_none, markdown, name, plot
from sami_rt.hardware.cpuinfo import report_machine

STEPS = (5, 10, 15, 20, 25, 50, 100)
CONTROL = ("ddpm", 100, "other seeds")
CONTROL_OFFSET = 50_000
BOOT = 2000
# figure: (key, label, worse direction: +1 higher is worse, -1 lower is worse, part of the verdict)
FIGURES = (("median_px", "median distance (px)", +1, True), ("mean_px", "mean distance (px)", +1, True),
           ("within_2px", "within 2 px", -1, True), ("bg_error", "background error", +1, True),
           ("variability", "conditioned variability", +1, True), ("residual", "residual RMS", +1, False))


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def disk_definition(bundle_root: Path) -> dict:
    from sami_rt.contract.bundle import read_bundle

    cfg = read_bundle(bundle_root, verify=False).manifest.training.get("config", {})
    if cfg.get("dataset") != "disks":
        raise SystemExit(f"{bundle_root} was not trained on the disks data set (dataset {cfg.get('dataset')!r})")
    return {"size": int(cfg["image_size"]), "radius": float(cfg["disk_radius"]),
            "foreground": float(cfg["disk_foreground"]),
            "bg": (float(cfg.get("disk_bg_min", 0.0)), float(cfg.get("disk_bg_max", 1.0)))}


def draw_factors(rng: np.random.Generator, n: int, d: dict) -> np.ndarray:
    """Factors [n, 3] as train.data.sample_disk_factors draws them (uniform; the whole disk inside)."""
    u = rng.random((n, 3))
    lo, hi = d["radius"], d["size"] - d["radius"]
    f = np.empty_like(u)
    f[:, :2] = lo + (hi - lo) * u[:, :2]
    f[:, 2] = d["bg"][0] + (d["bg"][1] - d["bg"][0]) * u[:, 2]
    return f


def coverage(images_u8: np.ndarray, foreground: float) -> np.ndarray:
    """Disk coverage summed per image, as ``sami_rt.media.disks.disk_centres`` weighs its centroid."""
    v = np.asarray(images_u8)[..., 0].astype(np.float64) / 255.0
    bg = np.median(v.reshape(len(v), -1), axis=1)[:, None, None]
    with np.errstate(divide="ignore", invalid="ignore"):
        cover = np.clip((v - bg) / (foreground - bg), 0.0, 1.0)
    return np.nan_to_num(cover).sum(axis=(1, 2))


def variability(x: np.ndarray) -> float:
    """train/evaluate.py's: mean squared distance of images from their own mean, per pixel."""
    x = np.asarray(x, np.float64)
    return float(((x - x.mean(0, keepdims=True)) ** 2).mean())


def measure(samples, truth: np.ndarray, d: dict, area: float) -> dict:
    """Per-sample figures of one guide's samples (``Samples``) against its factors (x, y, background)."""
    from sami_rt.media.disks import disk_centres, render_disks
    from train.factor_figures import find_disks

    x = samples.x
    finite = np.isfinite(x.reshape(len(x), -1)).all(axis=1)
    imgs = samples.images
    with np.errstate(divide="ignore", invalid="ignore"):
        c = disk_centres(imgs, d["foreground"])
    dist = np.linalg.norm(c - truth[None, :2], axis=1)
    bg = np.median(imgs[..., 0].reshape(len(imgs), -1), axis=1) / 255.0
    counts, _ = find_disks(np.nan_to_num(x[:, 0]), d["foreground"])
    cov = coverage(imgs, d["foreground"])
    ok = np.isfinite(c).all(axis=1)
    resid = np.full(len(x), np.nan)
    if ok.any():  # RMS distance (intensity, 0-1) from a clean disk at the sample's own centre and background
        clean = render_disks(np.c_[c[ok], bg[ok]], d["size"], d["radius"], d["foreground"])
        resid[ok] = np.sqrt(((imgs[ok, ..., 0] / 255.0 - clean) ** 2).mean(axis=(1, 2)))
    why = np.stack([~finite, counts != 1, (cov < 0.5 * area) | (cov > 1.5 * area)], 1)
    return {"dist": np.where(np.isfinite(dist), dist, np.nan), "bg_err": np.abs(bg - truth[2]),
            "malformed": why.any(axis=1), "why": why, "residual": resid, "variability": variability(np.nan_to_num(x))}


def stats(r: dict, idx: np.ndarray) -> dict:
    """The figures over guides ``idx`` ([B, G] bootstrap resamples or [G]): arrays [B] (or scalars)."""
    dist = r["dist"][idx]  # [..., G, P]
    flat = dist.reshape(*idx.shape[:-1], -1)
    finite = np.isfinite(flat)
    with np.errstate(invalid="ignore"):
        mean = np.where(finite, flat, 0).sum(-1) / np.maximum(finite.sum(-1), 1)
    return {"median_px": np.median(np.where(finite, flat, np.inf), axis=-1), "mean_px": mean,
            "within_2px": np.where(finite, flat < 2, False).mean(-1),
            "bg_error": r["bg_err"][idx].reshape(*idx.shape[:-1], -1).mean(-1),
            "variability": r["variability"][idx].mean(-1),
            "malformed": r["malformed"][idx].reshape(*idx.shape[:-1], -1).mean(-1),
            "residual": np.nanmean(r["residual"][idx].reshape(*idx.shape[:-1], -1), axis=-1)}


def summarise(results: dict, keys: list, guides: int, seed: int) -> dict:
    boot = np.random.default_rng([19, seed, 1]).integers(0, guides, size=(BOOT, guides))
    full = np.arange(guides)
    ref_b = stats(results[REF], boot)
    ref_v = float(stats(results[REF], full)["variability"])
    out = {}
    for key in keys:
        r = results[key]
        pt, bs = stats(r, full), stats(r, boot)
        row = {k: float(v) for k, v in pt.items()}
        row["se"] = {k: float(np.std(v[np.isfinite(v)])) if np.isfinite(v).any() else float("nan")
                     for k, v in bs.items()}
        row["malformed_count"] = int(r["malformed"].sum())
        row["malformed_why"] = dict(zip(("non-finite", "not one disk", "coverage"), map(int, r["why"].sum(0).sum(0))))
        row["samples"] = int(r["malformed"].size)
        row["variability_vs_ref"] = row["variability"] / ref_v
        ratio = bs["variability"] / ref_b["variability"]
        row["variability_vs_ref_ci95"] = [float(np.percentile(ratio, 2.5)), float(np.percentile(ratio, 97.5))]
        worse = []
        row["diff_ci95"] = {}
        for k, _, sign, criterion in FIGURES:
            if k == "variability":
                lo, hi = row["variability_vs_ref_ci95"]
                significantly_worse = lo > 1.0
            else:
                diff = bs[k] - ref_b[k]
                diff = diff[np.isfinite(diff)] if np.isfinite(diff).any() else np.array([np.inf])
                lo, hi = float(np.percentile(diff, 2.5)), float(np.percentile(diff, 97.5))
                significantly_worse = (lo > 0) if sign > 0 else (hi < 0)
                row["diff_ci95"][k] = [lo, hi]
            if significantly_worse and criterion and key != REF:
                worse.append(k)
        if row["malformed_count"] > int(results[REF]["malformed"].sum()):
            worse.append("malformed")
        row["worse_than_ref_on"] = worse
        row["matches_ref"] = not worse
        row["seconds_per_guide_batch"] = r["seconds"]
        out[key] = row
    return out


def time_in_process(rt, guide_u8, keys, repeats: int, seed: int) -> dict:
    order_rng = random.Random(seed)
    times = {k: [] for k in keys}
    rt.generate(guide=guide_u8, n=16, sampler="ddpm", steps=5, seed=0)  # warm-up
    for rep in range(repeats):
        order = list(keys)
        order_rng.shuffle(order)
        t_round = time.perf_counter()
        for sampler, steps in order:
            t0 = time.perf_counter()
            rt.generate(guide=guide_u8, n=16, sampler=sampler, steps=steps, seed=0)
            times[(sampler, steps)].append(time.perf_counter() - t0)
        log(f"timing round {rep + 1}/{repeats}: {time.perf_counter() - t_round:.0f} s")
    return times


def cli_command() -> list[str]:
    exe = shutil.which("sami-rt")
    if exe is None:
        cand = Path(sys.executable).with_name("sami-rt")
        exe = str(cand) if cand.exists() else None
    return [exe] if exe else [sys.executable, "-c", "from sami_rt.cli.main import main; main()"]


def time_cli(model, guide_png: Path, keys, repeats: int, seed: int) -> dict:
    """Wall seconds of the whole ``sami-rt generate --guide G -n 16 -o F`` command (the default: no --sampler)."""
    base = cli_command()
    order_rng = random.Random(seed + 1)
    times = {k: [] for k in keys}
    with tempfile.TemporaryDirectory() as tmp:
        for rep in range(repeats):
            order = list(keys)
            order_rng.shuffle(order)
            for sampler, steps in order:
                cmd = base + ["generate", "--guide", str(guide_png), "-n", "16", "-o", str(Path(tmp) / "g.png")]
                if (sampler, steps) != REF:
                    cmd += ["--sampler", sampler, "--steps", str(steps)]
                if model:
                    cmd += ["--model", str(model)]
                t0 = time.perf_counter()
                p = subprocess.run(cmd, capture_output=True, text=True)
                dt = time.perf_counter() - t0
                if p.returncode != 0:
                    raise SystemExit(f"{' '.join(cmd)} failed ({p.returncode}): {p.stderr[-2000:]}")
                times[(sampler, steps)].append(dt)
        log(f"command timing: {repeats} rounds of {len(keys)} settings")
    return times


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=None, help="bundle directory or shipped name (default: disks-small)")
    ap.add_argument("--guides", type=int, default=32)
    ap.add_argument("--per-guide", type=int, default=4)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=Path("benchmarks/sampler_steps"))
    ap.add_argument("--time-repeats", type=int, default=3)
    ap.add_argument("--cli-repeats", type=int, default=3, help="0: do not time the whole command")
    ap.add_argument("--steps", default=",".join(map(str, STEPS)), help=argparse.SUPPRESS)  # smoke runs only
    args = ap.parse_args(argv)
    report_machine()
    if args.guides < 2 or args.per_guide < 2:
        ap.error("--guides and --per-guide must be at least 2 (the variability needs two samples per guide)")
    steps_list = tuple(int(s) for s in args.steps.split(","))
    if 100 not in steps_list:
        ap.error("--steps must include 100 (the DDPM 100 reference)")

    from sami_rt.media.disks import render_disks, to_pixels
    from sami_rt.media.files import atomic_path
    from sami_rt.runtime import SAMPLERS, Runtime

    t_start = time.perf_counter()
    rt = Runtime(args.model, device="cpu")
    d = disk_definition(rt.bundle.root)
    scale = float(rt.bundle.manifest.sampling_scale)
    rng = np.random.default_rng([19, args.seed])
    factors = draw_factors(rng, args.guides, d)
    guides = to_pixels(render_disks(factors, d["size"], d["radius"], d["foreground"]))  # uint8 [G, H, W]
    test = render_disks(draw_factors(rng, 4000, d), d["size"], d["radius"], d["foreground"]) * 2 - 1
    test_var = variability(test)
    area = float(np.mean(coverage(guides[..., None], d["foreground"])))
    log(f"model {rt.bundle.root} ({rt.backend.name}), guidance scale {scale:g}; {args.guides} guides x "
        f"{args.per_guide} samples; test-set variability {test_var:.4f}, disk coverage {area:.1f} px")

    keys = [(s, n) for s in SAMPLERS for n in steps_list] + [CONTROL]
    results, notes = {}, set()
    for i, key in enumerate(keys):
        sampler, steps = key[:2]
        offset = CONTROL_OFFSET if len(key) > 2 else 0
        per = {"dist": [], "bg_err": [], "malformed": [], "why": [], "residual": [], "variability": []}
        t0 = time.perf_counter()
        for k in range(args.guides):
            s = rt.generate(guide=guides[k], n=args.per_guide, sampler=sampler, steps=steps,
                            seed=100_000 * args.seed + k + offset)
            notes.update(s.notes)
            m = measure(s, factors[k], d, area)
            for f in per:
                per[f].append(m[f])
        r = {f: np.array(v) for f, v in per.items()}
        r["seconds"] = time.perf_counter() - t0
        results[key] = r
        med = np.median(np.where(np.isfinite(r["dist"]), r["dist"], np.inf))
        log(f"[{i + 1}/{len(keys)}] {name(key)}: {r['seconds']:.0f} s, median distance {med:.2f} px, "
            f"background error {r['bg_err'].mean():.3f}, variability {r['variability'].mean() / test_var:.3f} "
            f"of the test set's, malformed {int(r['malformed'].sum())}")

    summary = summarise(results, keys, args.guides, args.seed)
    for key in keys:
        summary[key]["variability_ratio"] = summary[key]["variability"] / test_var
    ref_b = [summary[REF]["variability"] - 2 * summary[REF]["se"]["variability"],
             summary[REF]["variability"] + 2 * summary[REF]["se"]["variability"]]
    summary[REF]["variability_vs_ref_band"] = [v / summary[REF]["variability"] for v in ref_b]

    time_keys = [(s, n) for s in SAMPLERS for n in steps_list]
    timing = time_in_process(rt, guides[0], time_keys, args.time_repeats, args.seed)
    ref_time = float(np.median(timing[REF]))
    # settings at 100 steps cost what DDPM 100 costs: the candidates take fewer steps
    passing = sorted((k for k in time_keys if summary[k]["matches_ref"] and k[1] < REF[1]),
                     key=lambda k: np.median(timing[k]))
    rec = None
    if passing:
        k = passing[0]
        rec = {"sampler": k[0], "steps": k[1], "seconds_per_16": float(np.median(timing[k])),
               "speedup_in_process": ref_time / float(np.median(timing[k]))}
    cli = None
    if args.cli_repeats > 0:
        with tempfile.TemporaryDirectory() as tmp:
            import cv2

            g = Path(tmp) / "guide.png"
            cv2.imwrite(str(g), guides[0])
            # DDPM 100, every matching setting up to 25 steps (fastest first) and each sampler's 20 steps
            cand = [REF] + [k for k in passing if k[1] <= 25]
            cand += [(s, 20) for s in SAMPLERS if (s, 20) not in cand]
            cli = time_cli(args.model, g, cand, args.cli_repeats, args.seed)
        if rec:
            rec["speedup_command"] = float(np.median(cli[REF]) / np.median(cli[(rec["sampler"], rec["steps"])]))

    root = Path(rt.bundle.root).resolve()
    meta = {"model": str(root.relative_to(Path.cwd().resolve())) if root.is_relative_to(Path.cwd().resolve()) else str(root), "model_name": Path(rt.bundle.root).name, "backend": rt.backend.name,
            "scale": scale, "guides": args.guides, "per_guide": args.per_guide,
            "samples": args.guides * args.per_guide, "seed": args.seed,
            "guide_generator": f"numpy.random.default_rng([19, {args.seed}])",
            "sample_seeds": f"guide k: 100000 * {args.seed} + k (control: + {CONTROL_OFFSET})",
            "disks": d, "test_variability": test_var, "disk_coverage_px": area, "time_repeats": args.time_repeats,
            "threads": os.environ.get("OMP_NUM_THREADS", "default"), "machine": platform.processor() or platform.machine(),
            "guide_notes": sorted(notes), "recommendation": rec, "bootstrap": BOOT,
            "wall_seconds": None}
    meta["wall_seconds"] = time.perf_counter() - t_start
    md = markdown(summary, keys, timing, ref_time, cli, meta)
    print(md)
    args.out.mkdir(parents=True, exist_ok=True)
    doc = {"meta": meta, "guides": [{"x": float(f[0]), "y": float(f[1]), "background": float(f[2])} for f in factors],
           "settings": [{"sampler": k[0], "steps": k[1], "note": k[2] if len(k) > 2 else None, **summary[k],
                         "seconds_per_16": None if len(k) > 2 else timing[k[:2]],
                         "per_guide": {"distance_px": np.round(results[k]["dist"], 3).tolist(),
                                       "bg_error": np.round(results[k]["bg_err"], 4).tolist(),
                                       "malformed": results[k]["malformed"].astype(int).tolist(),
                                       "residual": np.round(results[k]["residual"], 4).tolist(),
                                       "variability": np.round(results[k]["variability"], 6).tolist()}}
                        for k in keys],
           "command_seconds": None if cli is None else [{"sampler": k[0], "steps": k[1], "seconds": v}
                                                        for k, v in cli.items()]}
    # indented, but each per-guide array on one line (the file stays small)
    compact = {}
    for i, row in enumerate(doc["settings"]):
        for f, v in row["per_guide"].items():
            compact[f"@{i}.{f}@"] = json.dumps(finite_or_none(v), separators=(",", ":"), allow_nan=False)
            row["per_guide"][f] = f"@{i}.{f}@"
    text = json.dumps(finite_or_none(doc), indent=1, allow_nan=False)
    for tag, v in compact.items():
        text = text.replace(json.dumps(tag), v)
    with atomic_path(args.out / "sampler_steps.json") as tmp:
        Path(tmp).write_text(text)
    with atomic_path(args.out / "sampler_steps.md") as tmp:
        Path(tmp).write_text(md)
    plot(summary, timing, SAMPLERS, steps_list, args.out / "sampler_steps.png", meta)
    log(f"wrote {args.out}/sampler_steps.json, .md, .png in {meta['wall_seconds']:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
