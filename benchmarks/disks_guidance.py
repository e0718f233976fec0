"""Guidance scale x guidance interval on disks runs (issue 29): the disk checks of train/disk_checks.py (fold,
decode from the posterior mean, interpolation) of each run at each setting, on a validation draw to choose on
(``--seeds 1``, the first listed) and a report draw (seed 0), in one process per run.

    python -m benchmarks.disks_guidance RUN [RUN ...] --out DIR [--scales 10 20] [--intervals 0:1 0:0.5]
        [--seeds 1 0] [--pairs 50] [--decode-samples 2] [--device cuda] [--threads 1]

A setting is a guidance scale s and an interval [lo, hi] of noise levels t / (T - 1): the steps inside it guide at
s, the others at 1 (the exact model; ``sami_rt.sampling.schedule.guidance_weights``). The seed keys the decode
noise, the interpolation pairs and their noise, so two seeds are two independent draws of the same checks.
Writes DIR/RUN_NAME/sS_iLO-HI_seedK/ (the checks' JSON and figures) and DIR/sweep.json, a row per run, setting
and seed (rewritten after each), and prints the rows.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from sami_rt.hardware.cpuinfo import report_machine
from sami_rt.sampling.schedule import check_interval
from train.io import write_json


def parse_interval(text: str) -> tuple[float, float]:
    try:
        return check_interval(text.split(":"))
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def row(run: Path, step: int, scale: float, interval, seed: int, res: dict, seconds: float) -> dict:
    dec, inter = res.get("decode", {}), res.get("interpolation", {})
    return {"run": run.name, "step": step, "scale": scale, "interval": list(interval), "seed": seed,
            "fold_fraction": round(res["fold"]["axes"]["fold_fraction"], 4),
            "decode_median_px": None if not dec else round(dec["median_px"], 3),
            "within_2px": None if not dec else round(dec["within_2px"], 3),
            "several_blobs": dec.get("several_blobs"), "no_disk": dec.get("no_disk"),
            "decode_images": dec.get("images"),
            "interpolation": None if not inter else f"{inter['passed']}/{inter['pairs']}",
            "seconds": round(seconds, 1)}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("runs", nargs="+", type=Path, help="training run directories (their EMA weights)")
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--scales", type=float, nargs="+", default=[10.0])
    ap.add_argument("--intervals", type=parse_interval, nargs="+", default=[(0.0, 1.0)], metavar="LO:HI")
    ap.add_argument("--seeds", type=int, nargs="+", default=[1, 0], help="draws (default 1, to choose on, then 0)")
    ap.add_argument("--pairs", type=int, default=50)
    ap.add_argument("--decode-samples", type=int, default=2)
    ap.add_argument("--steps", type=int, default=100, help="DDPM steps (default 100)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=1)
    a = ap.parse_args(argv)
    report_machine()
    import torch

    from train.disk_checks import TorchModel, run_checks
    from train.loop import load_run

    torch.set_num_threads(a.threads)
    rows, out = [], a.out
    done = json.loads((out / "sweep.json").read_text())["rows"] if (out / "sweep.json").is_file() else []
    for run in a.runs:
        model, cfg, abar, step = load_run(run)
        for seed in a.seeds:
            for scale in a.scales:
                for iv in a.intervals:
                    t0 = time.time()
                    m = TorchModel(model, cfg, abar.numpy(), a.steps, "ddpm", scale, run.name, iv, a.device)
                    d = out / run.name / f"s{scale:g}_i{iv[0]:g}-{iv[1]:g}_seed{seed}"
                    res = run_checks(m, d, a.pairs, a.decode_samples, seed)
                    rows.append(row(run, step, scale, iv, seed, res, time.time() - t0))
                    print(json.dumps(rows[-1]), flush=True)
                    write_json(out / "sweep.json", {"command": sys.argv, "rows": done + rows})
    return 0


if __name__ == "__main__":
    sys.exit(main())
