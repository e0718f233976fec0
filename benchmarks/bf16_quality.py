"""bfloat16 against float32 on guided samples and on the encoder (issue 31), with the sampler-steps study's
measures: how far a guided sample's disk lands from its guide's, and the conditioned variability.

    python -m benchmarks.bf16_quality [--model disks-small] [--guides 64] [--per-guide 8] [--seed 0]
                                      [--sampler ddpm] [--steps N] [--json OUT]

Guides, factors and measures are ``benchmarks/sampler_steps.py``'s (fresh disks from numpy's PCG64 seeded with
[19, seed]; ``measure``: the disk centre's distance from the guide's, background error, malformed samples, the
per-guide variability over the test set's). Settings, each with the same seeds (guide k: seed 100000 * seed + k,
so the same noise and the same posterior draws up to the encoder's own rounding): onnxruntime float32 (the
reference), OpenVINO float32, OpenVINO bfloat16 (what runs is printed: on a CPU without AMX-BF16 or
AVX512-BF16 the backend runs float32 and says so), and a control: onnxruntime float32 with other seeds, which
shows how far two draws of the reference differ. The acceptance: bf16's median distance within 10% of
float32's. Encoder: the posterior means of the guides and of 1,000 test disks, bf16 against float32: the
largest difference in units of the posterior's standard deviation, and in absolute terms.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

from benchmarks.sampler_steps import coverage, disk_definition, draw_factors, measure, variability


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=None)
    ap.add_argument("--guides", type=int, default=64)
    ap.add_argument("--per-guide", type=int, default=8)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--sampler", default="ddpm")
    ap.add_argument("--steps", type=int, default=None, help="default: the sampler's (ddpm: the bundle's)")
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--json", type=Path, default=None)
    a = ap.parse_args(argv)

    from sami_rt.hardware.cpuinfo import machine_line, peak_rss_mib
    from sami_rt.media.disks import render_disks, to_pixels
    from sami_rt.runtime import Runtime

    t0 = time.perf_counter()
    print(machine_line(), flush=True)
    rts = {"onnxruntime f32": Runtime(a.model, "cpu", a.threads, "f32"),
           "OpenVINO f32": Runtime(a.model, "openvino", a.threads, "f32"),
           "OpenVINO bf16": Runtime(a.model, "openvino", a.threads, "bf16")}
    for k, rt in rts.items():
        print(f"{k}: {rt.backend.name}" + "".join(f"; note: {n}" for n in rt.backend.notes), flush=True)
    ref = rts["onnxruntime f32"]
    d = disk_definition(ref.bundle.root)
    rng = np.random.default_rng([19, a.seed])
    factors = draw_factors(rng, a.guides, d)
    guides = to_pixels(render_disks(factors, d["size"], d["radius"], d["foreground"]))
    test = render_disks(draw_factors(rng, 1000, d), d["size"], d["radius"], d["foreground"]) * 2 - 1
    test_var = variability(test)
    area = float(np.mean(coverage(guides[..., None], d["foreground"])))

    settings = [(k, rt, 0) for k, rt in rts.items()] + [("control: onnxruntime f32, other seeds", ref, 50_000)]
    rows = {}
    for name, rt, offset in settings:
        dist, var, bad, bg = [], [], 0, []
        t1 = time.perf_counter()
        for k in range(a.guides):
            s = rt.generate(guide=guides[k], n=a.per_guide, sampler=a.sampler, steps=a.steps,
                            seed=100_000 * a.seed + k + offset)
            m = measure(s, factors[k], d, area)
            dist.append(m["dist"])
            var.append(m["variability"])
            bg.append(m["bg_err"])
            bad += int(m["malformed"].sum())
        dist = np.concatenate(dist)
        fin = np.isfinite(dist)
        rows[name] = {"median_px": float(np.median(np.where(fin, dist, np.inf))), "mean_px": float(dist[fin].mean()),
                      "within_2px": float((dist[fin] < 2).sum() / len(dist)), "bg_error": float(np.mean(bg)),
                      "variability_ratio": float(np.mean(var) / test_var), "malformed": bad,
                      "seconds": time.perf_counter() - t1}
        print(f"{name}: " + ", ".join(f"{k} {v:.4g}" for k, v in rows[name].items()), flush=True)

    # the encoder: posterior means, bf16 against float32
    x = np.concatenate([ref.load_images(list(guides)), test.astype(np.float32)[:, None]])
    mu32, var32 = rts["OpenVINO f32"].encode(x)
    mu16, _ = rts["OpenVINO bf16"].encode(x)
    mu_ort, _ = ref.encode(x)
    enc = {"images": len(x), "max_abs_mu_diff": float(np.abs(mu16 - mu32).max()),
           "max_mu_diff_in_sd": float((np.abs(mu16 - mu32) / np.sqrt(var32)).max()),
           "median_mu_diff_in_sd": float(np.median(np.abs(mu16 - mu32) / np.sqrt(var32))),
           "mu_range": float(np.abs(mu32).max()), "ov_f32_vs_ort_max_abs": float(np.abs(mu32 - mu_ort).max())}
    print("encoder: " + ", ".join(f"{k} {v:.4g}" for k, v in enc.items()))

    f32, b16 = rows["OpenVINO f32"]["median_px"], rows["OpenVINO bf16"]["median_px"]
    ok = abs(b16 - f32) <= 0.1 * f32
    steps = a.steps or "default"
    print(f"\n{a.guides} guides x {a.per_guide} samples, {a.sampler} {steps} steps, guidance scale "
          f"{ref.bundle.manifest.sampling_scale:g}, seed {a.seed}; {time.perf_counter() - t0:.0f} s; peak RSS "
          f"{peak_rss_mib():.0f} MiB\n")
    print("| setting | median px | mean px | within 2 px | background error | variability / test set's | "
          "malformed | seconds |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for k, r in rows.items():
        print(f"| {k} | {r['median_px']:.3f} | {r['mean_px']:.3f} | {r['within_2px']:.3f} | {r['bg_error']:.4f} | "
              f"{r['variability_ratio']:.4f} | {r['malformed']} | {r['seconds']:.1f} |")
    print(f"\nbf16 median distance {b16:.3f} px against float32's {f32:.3f} px: "
          f"{100 * (b16 / f32 - 1):+.1f}% ({'within' if ok else 'NOT within'} 10%)")
    print(f"encoder means, bf16 against float32 over {enc['images']} images: largest difference "
          f"{enc['max_abs_mu_diff']:.4f} ({enc['max_mu_diff_in_sd']:.3f} posterior sd; median "
          f"{enc['median_mu_diff_in_sd']:.4f} sd), the means' range {enc['mu_range']:.2f}")
    if a.json:
        a.json.write_text(json.dumps({"rows": rows, "encoder": enc, "within_10_percent": ok,
                                      "backends": {k: rt.backend.name for k, rt in rts.items()}}, indent=2) + "\n")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
