"""onnxruntime CPU session options, measured: which settings the runtime's CPU backend should use.

    python benchmarks/bench_session_options.py [--model BUNDLE] [--batch 1 16] [--repeats 40]

For each variant (intra-op threads, thread spinning, graph optimisation level, memory arena) the guided_eps
call is timed at each batch size, all variants interleaved in one process on the same inputs so that
machine noise hits them alike. Prints the median per variant and its ratio to the current default.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np

from sami_rt.hardware.cpuinfo import report_machine


def variants(ort):
    cores = os.cpu_count() or 1
    out = {}
    for threads in sorted({1, cores}):
        for spin in ("1", "0"):
            for level in ("basic", "all"):
                for arena in (True, False):
                    so = ort.SessionOptions()
                    so.log_severity_level = 3
                    so.intra_op_num_threads = threads
                    so.add_session_config_entry("session.intra_op.allow_spinning", spin)
                    so.graph_optimization_level = {"basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
                                                   "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL}[level]
                    so.enable_cpu_mem_arena = arena
                    out[f"threads={threads} spin={spin} opt={level} arena={int(arena)}"] = so
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=None)
    ap.add_argument("--batch", type=int, nargs="+", default=[1, 16])
    ap.add_argument("--repeats", type=int, default=40)
    args = ap.parse_args(argv)
    report_machine()
    import onnxruntime as ort

    from sami_rt.backends.onnxruntime import cpu_session_options
    from sami_rt.contract.bundle import read_bundle
    from sami_rt.runtime import DEFAULT_MODEL

    b = read_bundle(args.model or DEFAULT_MODEL)
    path = str(b.path(b.graphs["guided_eps"]))
    sessions = {k: ort.InferenceSession(path, so, providers=["CPUExecutionProvider"]) for k, so in variants(ort).items()}
    sessions["runtime's choice"] = ort.InferenceSession(path, cpu_session_options(ort), providers=["CPUExecutionProvider"])
    rng = np.random.default_rng()
    print(f"onnxruntime {ort.__version__}, {os.cpu_count()} cores, bundle {b.root}")
    for B in args.batch:
        feeds = {"x_t": rng.standard_normal((B, *b.manifest.image.shape)).astype(np.float32),
                 "t": rng.integers(0, b.manifest.T, B), "z": rng.standard_normal((B, b.manifest.latent_dim)).astype(np.float32),
                 "mask": np.ones((B, b.manifest.latent_dim), np.float32), "scale": np.ones(B, np.float32)}
        times = {k: [] for k in sessions}
        for _ in range(3):
            for s in sessions.values():
                s.run(None, feeds)
        for _ in range(args.repeats):
            for k, s in sessions.items():
                t0 = time.perf_counter()
                s.run(None, feeds)
                times[k].append(time.perf_counter() - t0)
        med = {k: 1e3 * float(np.median(v)) for k, v in times.items()}
        base = med["runtime's choice"]
        print(f"\nbatch {B}: median ms (ratio to the runtime's choice)")
        for k, v in sorted(med.items(), key=lambda kv: kv[1]):
            print(f"  {v:8.3f}  ({v / base:.2f})  {k}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
