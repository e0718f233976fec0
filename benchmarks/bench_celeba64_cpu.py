"""The real-size CPU benchmark of issue 19: one guided step (guided_eps) of the ``celeba64`` architecture at
batch 1 and 8, the runtime (onnxruntime CPU, ``OrtBackend``) against PyTorch eager on the same weights and
against ``torch.compile`` of the eager guided step, with 1 and 2 threads, beside a float32 peak of this CPU.

    python -m benchmarks.bench_celeba64_cpu [--out DIR] [--repeats N] [--reuse DIR] [--threads 1 2]
                                            [--batch 1 8] [--no-compile] [--compile-budget S]

Builds ``celeba64`` with random weights as ``benchmarks/gpu_acceptance.py`` does (one training step on random
64x64 images, its helpers), exports it with float32 graphs only and no parity check, into DIR/work; or reuses
``--reuse DIR``: a bundle, or a directory holding ``bundle/`` (and ``run/``) from an earlier run.

For each thread count, the backends' calls alternate (interleaved rounds, so that machine noise hits all
alike) on the same inputs, after one call each (the output comparison) as warm-up; medians. Outputs are compared with eager's: max |a - eager| / max |eager|.
Achieved GFLOP/s use the manifest's ``flops`` of guided_eps per sample; the peak is the GFLOP/s of a
2048x2048 float32 matmul through torch (MKL/oneDNN sgemm), the best of 20, at the same thread count. ``torch.compile`` (default
inductor backend) is compiled afresh for each thread count (inductor bakes the thread count into its
kernels), within ``--compile-budget`` seconds per compile (SIGALRM), and reported in one line if it fails
(then not tried again). An aborted compile leaves the process slowed (on the 2-vCPU machine the next batch-1
figures were 3-4x the clean run's), so after a failure rerun with ``--no-compile`` for the figures; on
that machine celeba64's compile did not finish in 200 s (benchmarks/RESULTS.md, issue 19).
Prints a Markdown table and writes DIR/bench_celeba64_cpu.json.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import sys
import time
from pathlib import Path

import numpy as np

from benchmarks.bench_batch64 import inputs, interleaved, load
from benchmarks.gpu_acceptance import random_images, run


def build(work: Path) -> Path:
    """celeba64 with random weights (one training step on random images), exported float32 without parity check."""
    work.mkdir(parents=True, exist_ok=True)
    log = work / "log.txt"
    py = sys.executable
    random_images(work / "images")
    t0 = time.perf_counter()
    run([py, "train/run.py", "--config", "celeba64", "--dataset", "folder", "--data-path", str(work / "images"),
         "--steps", "1", "--batch", "2", "--out", str(work / "run"), "--no-eval"], log)
    run([py, "export/run.py", str(work / "run"), "-o", str(work / "bundle"), "--no-validate"], log)
    print(f"built and exported in {time.perf_counter() - t0:.0f} s", flush=True)
    return work / "bundle"


def find_bundle(d: Path) -> Path:
    return d if (d / "manifest.json").exists() else d / "bundle"


def sgemm_peak(threads: int, n: int = 2048, repeats: int = 20) -> tuple[float, float]:
    """(best, median) GFLOP/s of ``repeats`` n x n float32 matmuls through torch with ``threads`` threads: the
    best is the peak (the median is what a shared machine gave most of the time)."""
    import torch

    torch.set_num_threads(threads)
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(n, n, generator=g), torch.randn(n, n, generator=g)
    c = torch.empty(n, n)
    for _ in range(2):
        torch.matmul(a, b, out=c)
    ts = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        torch.matmul(a, b, out=c)
        ts.append(time.perf_counter() - t0)
    return 2 * n ** 3 / min(ts) / 1e9, 2 * n ** 3 / statistics.median(ts) / 1e9


class _Timeout(Exception):
    pass


def compiled_step(ref, budget: float, warm_args: list):
    """torch.compile of the eager guided step (``TorchBaseline.guided_eps``'s body), compiled and warmed on each
    of ``warm_args`` within ``budget`` seconds: (callable on numpy arrays, compile seconds) or (None, why)."""
    import torch

    from sami_reference.guidance import guided_eps

    torch._dynamo.reset()
    model, s1m = ref.model, ref.s1m

    def step(x_t, t, z, mask, scale):
        return guided_eps(model.denoiser, model.encoder, x_t, t, z, s1m[t], scale, mask)

    cstep = torch.compile(step)

    def call(x_t, t, z, mask, scale):
        f = torch.from_numpy
        return cstep(f(x_t), f(t), f(z), f(mask), f(scale)).detach().numpy()

    def alarm(*_):
        raise _Timeout()

    old = signal.signal(signal.SIGALRM, alarm)
    signal.alarm(int(budget))
    t0 = time.perf_counter()
    try:
        for a in warm_args:
            call(*a)
            call(*a)
    except _Timeout:
        return None, f"did not compile within {budget:.0f} s"
    except Exception as e:  # noqa: BLE001 - any failure of the compiler is reported, not raised
        if "_Timeout" in f"{type(e).__name__}: {e}":  # inductor wraps the alarm's exception
            return None, f"did not compile within {budget:.0f} s"
        return None, f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"[:200]
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)
    return call, time.perf_counter() - t0


def openvino_backends(b, threads: int) -> dict:
    """OpenVINO float32 and, where the CPU has AMX-BF16 or AVX512-BF16, bfloat16 (none without OpenVINO). Opened
    without the backend's check against onnxruntime (a bundle that ``--reuse`` passes may be one OpenVINO gets
    wrong), so that its speed is measured; its difference from eager is in the table's last column."""
    from sami_rt.backends import BackendError
    from sami_rt.backends.openvino import OpenVinoBackend
    from sami_rt.hardware.cpuinfo import bf16_support

    out = {}
    for prec in ("float32", "bfloat16") if bf16_support()[0] else ("float32",):
        try:
            out[f"OpenVINO {prec}"] = OpenVinoBackend(b, threads, prec, check=False)
        except BackendError as e:
            print(f"OpenVINO {prec}: {e}", flush=True)
    return out


def rel(a, ref) -> float:
    return float(np.abs(a - ref).max() / np.abs(ref).max())


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=Path("bench-celeba64-cpu"))
    ap.add_argument("--repeats", type=int, default=5, help="interleaved rounds per (threads, batch) (default 5)")
    ap.add_argument("--reuse", type=Path, default=None, help="a bundle, or a DIR with bundle/ from an earlier run")
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--batch", type=int, nargs="+", default=[1, 8])
    ap.add_argument("--no-compile", action="store_true", help="skip torch.compile")
    ap.add_argument("--compile-budget", type=float, default=240, help="seconds per torch.compile (default 240)")
    args = ap.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)

    t_start = time.perf_counter()
    bundle_dir = find_bundle(args.reuse) if args.reuse else build(args.out / "work")

    import onnxruntime as ort
    import torch

    from sami_reference.baseline import TorchBaseline
    from sami_rt.backends.onnxruntime import OrtBackend
    from sami_rt.contract.bundle import read_bundle

    b = read_bundle(str(bundle_dir))
    flops = b.manifest.flops["guided_eps"]
    meta = {"bundle": str(bundle_dir), "onnxruntime": ort.__version__, "torch": torch.__version__,
            "cpus": os.cpu_count(), "load_start": load(), "guided_eps_flops_per_sample": flops,
            "repeats": args.repeats, "argv": sys.argv}
    from sami_rt.hardware.cpuinfo import machine_line, peak_rss_mib

    meta["cpu_line"] = machine_line()
    print(meta["cpu_line"], flush=True)
    print(f"bundle {bundle_dir}; onnxruntime {ort.__version__}, torch {torch.__version__}; {os.cpu_count()} CPUs; "
          f"load {load():.2f}; guided_eps {flops / 1e6:.1f} MFLOP per sample", flush=True)

    peaks, sgemm_median, rows, compile_notes = {}, {}, [], {}
    for th in args.threads:
        peaks[th], med = sgemm_peak(th)
        sgemm_median[th] = med
        print(f"sgemm 2048x2048 float32 through torch, {th} thread(s): best {peaks[th]:.1f}, median {med:.1f} GFLOP/s",
              flush=True)
        be = OrtBackend(b, "cpu", threads=th)
        ref = TorchBaseline(b, th)
        ref16 = TorchBaseline(b, th, bf16=True)
        ovs = openvino_backends(b, th)
        torch.set_num_threads(th)
        all_args = {B: inputs(b, B) for B in args.batch}
        comp = None
        if not args.no_compile and any("failed" in n for n in compile_notes.values()):
            compile_notes[th] = "not tried (failed at an earlier thread count)"
        elif not args.no_compile:
            comp, info = compiled_step(ref, args.compile_budget, list(all_args.values()))
            if comp is None:
                info = f"failed: {info}"
                compile_notes[th] = info
                print(f"torch.compile, {th} thread(s): {info}", flush=True)
            else:
                compile_notes[th] = f"compiled and warmed at batch {args.batch} in {info:.0f} s"
                print(f"torch.compile, {th} thread(s): {compile_notes[th]}", flush=True)
        for B in args.batch:
            a = all_args[B]
            fns = {"onnxruntime (sami_rt)": lambda: be.guided_eps(*a), "PyTorch eager": lambda: ref.guided_eps(*a),
                   "PyTorch eager bf16 (autocast)": lambda: ref16.guided_eps(*a)}
            fns.update({k: (lambda o=o: o.guided_eps(*a)) for k, o in ovs.items()})
            if comp is not None:
                fns["torch.compile (inductor)"] = lambda: comp(*a)
            eager_out = ref.guided_eps(*a)
            diffs = {k: rel(f(), eager_out) for k, f in fns.items()}
            m = interleaved(fns, args.repeats, warmup=0)  # the comparison call above warmed each
            for k, ms in m.items():
                gf = flops * B / ms / 1e6
                rows.append({"backend": k, "threads": th, "batch": B, "ms": ms, "gflops": gf,
                             "fraction_of_peak": gf / peaks[th], "vs_eager": m["PyTorch eager"] / ms,
                             "max_rel_diff_vs_eager": diffs[k], "load": load()})
            print(f"  threads {th}, batch {B}: " + ", ".join(f"{k} {v:.1f} ms" for k, v in m.items())
                  + f" (load {load():.2f})", flush=True)
        del be, ref, ref16, ovs, comp

    meta["load_end"] = load()
    meta["peak_rss_mib"] = peak_rss_mib()
    meta["seconds"] = time.perf_counter() - t_start
    print("\n| backend | threads | batch | ms/step | GFLOP/s | fraction of peak | eager / backend | "
          "max rel diff vs eager |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for r in sorted(rows, key=lambda r: (r["threads"], r["batch"])):
        print(f"| {r['backend']} | {r['threads']} | {r['batch']} | {r['ms']:.1f} | {r['gflops']:.1f} | "
              f"{100 * r['fraction_of_peak']:.1f}% | {r['vs_eager']:.2f}x | {r['max_rel_diff_vs_eager']:.1e} |")
    print("\nfloat32 peak (2048x2048 torch.matmul, best of 20): " + ", ".join(
        f"{th} thread(s) {p:.1f} GFLOP/s (median {sgemm_median[th]:.1f})" for th, p in peaks.items()))
    for th, note in compile_notes.items():
        print(f"torch.compile, {th} thread(s): {note}")
    print(f"{meta['cpu_line']}; peak RSS {meta['peak_rss_mib']:.0f} MiB")
    res = {"meta": meta, "peak_gflops": {str(k): v for k, v in peaks.items()},
           "sgemm_median_gflops": {str(k): v for k, v in sgemm_median.items()}, "rows": rows,
           "torch_compile": {str(k): v for k, v in compile_notes.items()}}
    (args.out / "bench_celeba64_cpu.json").write_text(json.dumps(res, indent=2) + "\n")
    print(f"figures -> {args.out / 'bench_celeba64_cpu.json'} ({meta['seconds']:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
