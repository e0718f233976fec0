"""guided_eps per call: onnxruntime (CPU) against PyTorch eager (denoiser forward + torch.autograd.grad guidance).

    python -m benchmarks.bench_guided_eps BUNDLE_DIR RUN_DIR [--batch 1 16] [--repeats 50] [--threads N]

Both run in this one process, interleaved, on the same random inputs; the figure of merit is the ratio of
medians. Prints a Markdown table row per batch size and, with --json, writes the figures.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

from sami_rt.hardware.cpuinfo import report_machine


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("bundle", type=Path)
    ap.add_argument("run", type=Path, help="the run directory the bundle was exported from")
    ap.add_argument("--batch", type=int, nargs="+", default=[1, 16])
    ap.add_argument("--repeats", type=int, default=50)
    ap.add_argument("--threads", type=int, default=0, help="threads for both (0 = each library's default)")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args(argv)
    report_machine()

    import onnxruntime as ort

    from export.core import load_model
    from sami_rt.contract.bundle import read_bundle
    from train.objective import guided_eps

    b = read_bundle(args.bundle)
    model, cfg, abar, _ = load_model(args.run)
    so = ort.SessionOptions()
    if args.threads:
        so.intra_op_num_threads = args.threads
        torch.set_num_threads(args.threads)
    sess = ort.InferenceSession(str(b.path(b.graphs["guided_eps"])), so, providers=["CPUExecutionProvider"])
    rows = []
    for B in args.batch:
        g = torch.Generator().manual_seed(B)
        x = torch.randn(B, *b.manifest.image.shape, generator=g)
        t = torch.randint(b.manifest.T, (B,), generator=g)
        z = torch.randn(B, b.manifest.latent_dim, generator=g)
        mask = torch.ones(B, b.manifest.latent_dim)
        scale = torch.ones(B)
        s1m = torch.sqrt(1 - abar[t]).float()
        feeds = {"x_t": x.numpy(), "t": t.numpy(), "z": z.numpy(), "mask": mask.numpy(), "scale": scale.numpy()}

        def run_torch():
            return guided_eps(model.denoiser, model.encoder, x, t, z, s1m, scale, mask)

        def run_ort():
            return sess.run(None, feeds)[0]

        err = float(np.abs(run_ort() - run_torch().detach().numpy()).max())
        for _ in range(5):  # warm-up
            run_torch(), run_ort()
        tt, to = [], []
        for _ in range(args.repeats):  # interleaved so that machine noise hits both alike
            t0 = time.perf_counter()
            run_torch()
            t1 = time.perf_counter()
            run_ort()
            t2 = time.perf_counter()
            tt.append(t1 - t0)
            to.append(t2 - t1)
        row = {"batch": B, "torch_ms": 1e3 * statistics.median(tt), "ort_ms": 1e3 * statistics.median(to),
               "torch_iqr_ms": 1e3 * float(np.subtract(*np.percentile(tt, [75, 25]))),
               "ort_iqr_ms": 1e3 * float(np.subtract(*np.percentile(to, [75, 25]))), "max_abs_diff": err}
        row["speedup"] = row["torch_ms"] / row["ort_ms"]
        rows.append(row)
        print(f"| {B} | {row['torch_ms']:.2f} | {row['ort_ms']:.2f} | {row['speedup']:.2f}x | {err:.1e} |")
    if args.json:
        meta = {"torch": torch.__version__, "onnxruntime": ort.__version__, "python": platform.python_version(),
                "machine": platform.machine(), "threads": args.threads or "default", "repeats": args.repeats}
        args.json.write_text(json.dumps({"meta": meta, "rows": rows}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
