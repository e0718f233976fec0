"""SAMI against a VAE and a beta-VAE with the same encoder, data and budget: disentanglement_lib's metrics.

    python -m benchmarks.compare_baselines --out DIR [--data disks dsprites] [--models sami vae beta-vae]
        [--seeds 0 1 2] [--steps 1500] [--sami-seeds 0] [--threads 1] [--table OUT.md]

Each (data, model, seed) trains one run with ``train/run.py --config CONFIG --model MODEL --seed S --steps N
--no-eval`` (CONFIG: ``disks-small`` with 3 latent dimensions for disks, ``dsprites`` for dSprites; the same
encoder, batch, steps and data for every model) and scores its EMA encoder on held-out data with
``train/evaluate.py``'s code (``--no-generate``: the factor metrics only). A finished run is not trained again
(resumable). The table gives the mean and the spread (min-max) over seeds of MIG, DCI (D/C/I), SAP,
Modularity, FactorVAE score and k-NN R^2 per factor, and the training time per run, as Markdown
(--table) and JSON (DIR/compare.json). SAMI runs cost far more per step than the baselines (a diffusion
decoder and a double backward), so ``--sami-seeds`` may be fewer than ``--seeds``.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from sami_rt.hardware.cpuinfo import report_machine

ROOT = Path(__file__).resolve().parent.parent

CONFIGS = {"disks": ("disks-small", ["--latent-dim", "3"]), "dsprites": ("dsprites", [])}
KEYS = ("mig", "dci_disentanglement", "dci_completeness", "dci_informativeness", "sap", "modularity", "factor_vae")


def run_one(out: Path, data: str, model: str, seed: int, args) -> dict:
    run = out / f"{data}-{model}-s{seed}"
    done = run / "compare_row.json"
    if done.is_file():
        return json.loads(done.read_text())
    config, extra = CONFIGS[data]
    cmd = [sys.executable, str(ROOT / "train" / "run.py"), "--no-eval", "--threads", str(args.threads)]
    if (run / "checkpoint.pt").is_file():
        cmd += ["--resume", str(run)]
    else:
        cmd += ["--config", config, *extra, "--model", model, "--seed", str(seed), "--steps", str(args.steps),
                "--out", str(run), "--sample-every", "0"]
        if model != "sami" and data == "dsprites":
            cmd += ["--vae-likelihood", "bernoulli"]
    t0 = time.time()
    with open(out / f"{run.name}.log", "ab") as log:
        subprocess.run(cmd, check=True, stdout=log, stderr=subprocess.STDOUT)
    train_s = time.time() - t0
    from train.evaluate import evaluate_run

    res = evaluate_run(run, n_test=1000, generate=False)
    f = res["factors"]
    row = {"data": data, "model": model, "seed": seed, "steps": args.steps, "train_s": round(train_s, 1),
           **{k: f[k] for k in KEYS}, "knn_r2": f["knn_r2"]}
    done.write_text(json.dumps(row) + "\n")
    return row


def table(rows: list[dict]) -> str:
    def cell(vals):
        vals = np.asarray(vals, dtype=float)
        return f"{vals.mean():.3f}" if len(vals) == 1 else f"{vals.mean():.3f} ({vals.min():.3f}-{vals.max():.3f})"

    head = ("| data | model | seeds | MIG | DCI D | DCI C | DCI I | SAP | Modularity | FactorVAE | k-NN R^2 per factor "
            "| train s/run |\n|" + " --- |" * 12)
    lines = [head]
    for data in dict.fromkeys(r["data"] for r in rows):
        for model in dict.fromkeys(r["model"] for r in rows if r["data"] == data):
            rs = [r for r in rows if r["data"] == data and r["model"] == model]
            knn = " / ".join(f"{k} {np.mean([r['knn_r2'][k] for r in rs]):.2f}" for k in rs[0]["knn_r2"])
            lines.append(f"| {data} | {model} | {len(rs)} | " + " | ".join(cell([r[k] for r in rs]) for k in KEYS)
                         + f" | {knn} | {np.mean([r['train_s'] for r in rs]):.0f} |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--data", nargs="+", default=["disks", "dsprites"], choices=sorted(CONFIGS))
    ap.add_argument("--models", nargs="+", default=["sami", "vae", "beta-vae"])
    ap.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    ap.add_argument("--sami-seeds", nargs="+", type=int, help="seeds for SAMI (default: --seeds)")
    ap.add_argument("--steps", type=int, default=1500)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--table", type=Path, help="also write the Markdown table here")
    args = ap.parse_args(argv)
    report_machine()
    args.out.mkdir(parents=True, exist_ok=True)
    rows = []
    for data in args.data:
        for model in args.models:
            for seed in (args.sami_seeds or args.seeds) if model == "sami" else args.seeds:
                r = run_one(args.out, data, model, seed, args)
                rows.append(r)
                print(f"{data} {model} seed {seed}: " + ", ".join(f"{k} {r[k]:.3f}" for k in KEYS)
                      + f" ({r['train_s']:.0f} s)", flush=True)
    # the table covers every finished run in DIR (earlier invocations' too), in a fixed order
    order = {(d, m): i for i, (d, m) in enumerate((d, m) for d in CONFIGS for m in ("sami", "vae", "beta-vae"))}
    rows = sorted((json.loads(p.read_text()) for p in args.out.glob("*/compare_row.json")),
                  key=lambda r: (order.get((r["data"], r["model"]), 99), r["seed"]))
    (args.out / "compare.json").write_text(json.dumps(rows, indent=2) + "\n")
    text = table(rows)
    print(text)
    if args.table:
        args.table.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
