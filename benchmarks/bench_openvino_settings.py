"""OpenVINO's CPU settings against onnxruntime on one graph (issue 31): which performance hint, thread and
pinning settings and which inference precision the OpenVINO backend should compile with.

    python benchmarks/bench_openvino_settings.py [--model disks-small] [--graph guided_eps] [--batch 1 16 64]
                                                 [--threads 2] [--repeats 30] [--blocks]

Every configuration compiles the bundle's ONNX graph at each batch size (static shape), read as the backend
reads it (``prepare_graph``: each shared weight copied per reader, spatial means as poolings), and runs the
contract's example inputs; onnxruntime runs the same inputs through the runtime's own CPU session options.
Calls are interleaved across configurations (so that machine noise hits all alike), medians; ``--blocks``
times each configuration in a block of its own instead (threads of one library that spin after a call then
cannot take the cores from the next library's call). ``default`` passes no property at all: on a CPU with bf16
(AVX512-BF16, AMX) OpenVINO then runs bf16, which the precision column shows. Also prints compile times,
with and without OpenVINO's on-disk model cache (CACHE_DIR), the CPU model, its flags and the peak RSS.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time

import numpy as np


def configs(threads: int, bf16: bool) -> dict[str, dict]:
    thr = {"INFERENCE_NUM_THREADS": threads} if threads else {}
    f32 = {"INFERENCE_PRECISION_HINT": "f32"}
    out = {
        "default (no properties)": {},
        "f32, no hint": {**f32, **thr},
        "f32, LATENCY, no pinning (the backend's)": {**f32, **thr, "PERFORMANCE_HINT": "LATENCY",
                                                     "ENABLE_CPU_PINNING": False},
        "f32, LATENCY, pinning": {**f32, **thr, "PERFORMANCE_HINT": "LATENCY", "ENABLE_CPU_PINNING": True},
        "f32, THROUGHPUT": {**f32, "PERFORMANCE_HINT": "THROUGHPUT"},
        "f32, LATENCY, no pinning, denormals flushed": {**f32, **thr, "PERFORMANCE_HINT": "LATENCY",
                                                        "ENABLE_CPU_PINNING": False,
                                                        "CPU_DENORMALS_OPTIMIZATION": True},
        "f32, LATENCY, 1 thread": {**f32, "PERFORMANCE_HINT": "LATENCY", "INFERENCE_NUM_THREADS": 1,
                                   "ENABLE_CPU_PINNING": False},
    }
    if bf16:
        out["bf16, LATENCY, no pinning"] = {"INFERENCE_PRECISION_HINT": "bf16", **thr, "PERFORMANCE_HINT": "LATENCY",
                                            "ENABLE_CPU_PINNING": False}
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=None)
    ap.add_argument("--graph", default="guided_eps", choices=["guided_eps", "denoiser", "encoder"])
    ap.add_argument("--batch", type=int, nargs="+", default=[1, 16, 64])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=30)
    ap.add_argument("--blocks", action="store_true", help="time each configuration in a block of its own")
    args = ap.parse_args(argv)

    import onnxruntime as ort
    import openvino as ov

    from sami_rt.backends.onnxruntime import cpu_session_options
    from sami_rt.backends.openvino import prepare_graph
    from sami_rt.contract.bundle import read_bundle
    from sami_rt.contract.format import GRAPHS
    from sami_rt.hardware.cpuinfo import bf16_support, machine_line, peak_rss_mib
    from sami_rt.runtime import resolve_model

    b = read_bundle(resolve_model(args.model))
    path = str(b.path(b.graphs[args.graph]))
    print(f"{machine_line()}; load {os.getloadavg()[0]:.2f}; onnxruntime {ort.__version__}, OpenVINO {ov.__version__}")
    print(f"{b.root.name} {args.graph}, {args.threads} threads, {args.repeats} {'blocked' if args.blocks else 'interleaved'}"
          " calls per figure, medians (ms)")
    core = ov.Core()
    sess = ort.InferenceSession(path, cpu_session_options(ort, args.threads), providers=["CPUExecutionProvider"])
    cfgs = configs(args.threads, bf16_support()[0])
    rows = []
    for B in args.batch:
        f = GRAPHS[args.graph].example_inputs(np.random.default_rng(B), B, b.manifest.dims, b.manifest.T)
        ref = sess.run(None, f)[0]
        fns, info = {"onnxruntime (sami_rt's session options)": lambda: sess.run(None, f)}, {}
        for name, cfg in cfgs.items():
            m = core.read_model(path)
            prepare_graph(m, ov)  # as the backend reads it
            m.reshape({k: list(v.shape) for k, v in f.items()})
            t0 = time.perf_counter()
            c = core.compile_model(m, "CPU", cfg)
            ct = time.perf_counter() - t0
            req = c.create_infer_request()
            req.infer(f)
            out = req.get_output_tensor(0).data
            info[name] = (ct, str(c.get_property("INFERENCE_PRECISION_HINT")).split("'")[-2] if "'" in str(
                c.get_property("INFERENCE_PRECISION_HINT")) else str(c.get_property("INFERENCE_PRECISION_HINT")),
                c.get_property("NUM_STREAMS"), c.get_property("INFERENCE_NUM_THREADS"),
                float(np.abs(out - ref).max() / np.abs(ref).max()))
            fns[name] = lambda req=req: req.infer(f)
        times = {k: [] for k in fns}
        for k in fns:  # warm-up
            fns[k]()
        order = [[k] * args.repeats for k in fns] if args.blocks else [list(fns)] * args.repeats
        for group in order:
            for k in group:
                t0 = time.perf_counter()
                fns[k]()
                times[k].append(time.perf_counter() - t0)
        med = {k: float(np.median(v)) * 1e3 for k, v in times.items()}
        base = med["onnxruntime (sami_rt's session options)"]
        print(f"\nbatch {B} (load {os.getloadavg()[0]:.2f})\n")
        print("| configuration | ms | onnxruntime / it | precision | streams | threads | compile s | max rel diff |")
        print("| --- | --- | --- | --- | --- | --- | --- | --- |")
        for k, ms in med.items():
            ct, prec, st, th, diff = info.get(k, (float("nan"), "f32", "-", args.threads, 0.0))
            print(f"| {k} | {ms:.2f} | {base / ms:.2f}x | {prec} | {st} | {th} | {ct:.2f} | {diff:.1e} |")
            rows.append((B, k, ms, base / ms))
    # compile time with OpenVINO's on-disk cache: the first compile writes the blob, a new Core reads it
    with tempfile.TemporaryDirectory() as d:
        ct = []
        for _ in range(2):
            c2 = ov.Core()
            c2.set_property({"CACHE_DIR": d})
            m = c2.read_model(path)
            prepare_graph(m, ov)
            m.reshape({k: list(v.shape) for k, v in f.items()})
            t0 = time.perf_counter()
            c2.compile_model(m, "CPU", cfgs["f32, LATENCY, no pinning (the backend's)"])
            ct.append(time.perf_counter() - t0)
    print(f"\ncompile at batch {args.batch[-1]} with CACHE_DIR: first {ct[0]:.2f} s, from the cache {ct[1]:.2f} s; "
          f"peak RSS {peak_rss_mib():.0f} MiB; load {os.getloadavg()[0]:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
