"""guided_eps at batch 1, 16 and 64: the runtime (onnxruntime CPU, the runtime's session options) against
PyTorch eager on the same weights (``sami_reference.baseline.TorchBaseline``), with 1 and 2 threads (issue 19).

    python -m benchmarks.bench_batch64 [--model BUNDLE] [--batch 1 16 64] [--threads 2 1] [--repeats 20]
    python -m benchmarks.bench_batch64 --variants [--batch 1 16 64]   # CPU session options, interleaved
    python -m benchmarks.bench_batch64 --profile [--batch 64]         # time per operator type, both sides

For each thread count, the runtime's and PyTorch's calls alternate (interleaved rounds, so that machine noise
hits both alike) on the same inputs; medians, their ratio, and the achieved GFLOP/s (the manifest's FLOPs
per sample of guided_eps). ``--variants`` times candidate session options against the runtime's, also
interleaved; ``--profile`` sums onnxruntime's profiler (per node, by operator type) and torch.profiler
(self CPU time per op) over a few calls.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import statistics
import sys
import tempfile
import time

import numpy as np

from sami_rt.hardware.cpuinfo import report_machine


def inputs(b, B: int, seed: int = 0):
    from sami_rt.contract.format import GRAPHS

    g = GRAPHS["guided_eps"].example_inputs(np.random.default_rng(seed + B), B, b.manifest.dims, b.manifest.T)
    return (g["x_t"], g["t"], g["z"], g["mask"], g["scale"])


def interleaved(fns: dict, repeats: int, warmup: int = 2) -> dict:
    for _ in range(warmup):
        for f in fns.values():
            f()
    times = {k: [] for k in fns}
    for _ in range(repeats):
        for k, f in fns.items():
            t0 = time.perf_counter()
            f()
            times[k].append(time.perf_counter() - t0)
    return {k: 1e3 * statistics.median(v) for k, v in times.items()}


def load():
    return os.getloadavg()[0]


def table(b, batches, thread_counts, repeats):
    import torch

    from sami_reference.baseline import TorchBaseline
    from sami_rt.backends.onnxruntime import OrtBackend

    flops = b.manifest.flops["guided_eps"]
    print("| threads | batch | runtime ms | eager ms | eager / runtime | runtime GFLOP/s | eager GFLOP/s | "
          "max abs diff | load |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    rows = []
    for th in thread_counts:
        be = OrtBackend(b, "cpu", threads=th)
        ref = TorchBaseline(b, th)
        torch.set_num_threads(th)
        for B in batches:
            args = inputs(b, B)
            diff = float(np.abs(be.guided_eps(*args) - ref.guided_eps(*args)).max())
            reps = max(5, repeats // 4) if B >= 64 else repeats
            m = interleaved({"rt": lambda: be.guided_eps(*args), "eager": lambda: ref.guided_eps(*args)}, reps)
            row = {"threads": th, "batch": B, "runtime_ms": m["rt"], "eager_ms": m["eager"],
                   "ratio": m["eager"] / m["rt"], "rt_gflops": flops * B / m["rt"] / 1e6,
                   "eager_gflops": flops * B / m["eager"] / 1e6, "diff": diff, "load": load(), "repeats": reps}
            rows.append(row)
            print(f"| {th} | {B} | {row['runtime_ms']:.2f} | {row['eager_ms']:.2f} | {row['ratio']:.2f}x | "
                  f"{row['rt_gflops']:.1f} | {row['eager_gflops']:.1f} | {diff:.1e} | {row['load']:.2f} |",
                  flush=True)
        del be
    return rows


def fuse_group_norm(path: str) -> bytes:
    """The guided_eps graph with each GroupNorm that the exporter decomposed (Reshape to (B, G, K) ->
    ReduceMean, Sub, Pow 2, ReduceMean, Add eps, Sqrt, Div -> Reshape) rewritten as one LayerNormalization
    over the last axis (scale 1, bias 0): an experiment, the shipped bundle is not changed."""
    import onnx
    from onnx import helper, numpy_helper

    m = onnx.load(path)
    g = m.graph
    const = {i.name: numpy_helper.to_array(i) for i in g.initializer}
    shapes = {}
    for n in g.node:
        if n.op_type == "Reshape" and n.input[1] in const:
            shapes[n.output[0]] = const[n.input[1]]
    consumers = collections.defaultdict(list)
    for n in g.node:
        for i in n.input:
            consumers[i].append(n)
    drop, new, fused = set(), {}, 0
    for n in g.node:
        if n.op_type != "ReduceMean" or n.input[0] not in shapes or list(const.get(n.input[1], [])) != [-1]:
            continue
        x = n.input[0]
        try:
            sub = next(c for c in consumers[n.output[0]] if c.op_type == "Sub" and c.input == [x, n.output[0]])
            pow_ = next(c for c in consumers[sub.output[0]] if c.op_type == "Pow")
            rm2 = consumers[pow_.output[0]][0]
            add = consumers[rm2.output[0]][0]
            sqrt = consumers[add.output[0]][0]
            div = consumers[sqrt.output[0]][0]
        except (StopIteration, IndexError):
            continue
        chain = [n, sub, pow_, rm2, add, sqrt, div]
        if [c.op_type for c in chain] != ["ReduceMean", "Sub", "Pow", "ReduceMean", "Add", "Sqrt", "Div"] or \
                float(const[pow_.input[1]]) != 2.0 or div.input[0] != sub.output[0] or \
                len(consumers[sub.output[0]]) != 2:
            continue
        K = int(shapes[x][-1])
        ones, zeros = f"gn_fused_ones_{K}", f"gn_fused_zeros_{K}"
        if ones not in const:
            const[ones] = np.ones(K, np.float32)
            const[zeros] = np.zeros(K, np.float32)
            g.initializer.extend([numpy_helper.from_array(const[ones], ones), numpy_helper.from_array(const[zeros], zeros)])
        eps = float(const[add.input[1]])
        new[id(div)] = helper.make_node("LayerNormalization", [x, ones, zeros], [div.output[0]], axis=-1,
                                        epsilon=eps, name=f"gn_fused_{fused}")
        drop.update(id(c) for c in chain[:-1])
        fused += 1
    nodes = [new.get(id(n), n) for n in g.node if id(n) not in drop]
    del g.node[:]
    g.node.extend(nodes)
    return m.SerializeToString()


def variant_options(ort, threads: int):
    from sami_rt.backends.onnxruntime import cpu_session_options

    def so(**kw):
        s = cpu_session_options(ort, threads)
        for k, v in kw.items():
            if k == "spin":
                s.add_session_config_entry("session.intra_op.allow_spinning", v)
            elif k == "level":
                s.graph_optimization_level = getattr(ort.GraphOptimizationLevel, v)
            elif k == "parallel":
                s.execution_mode = ort.ExecutionMode.ORT_PARALLEL
                s.inter_op_num_threads = threads
            else:
                setattr(s, k, v)
        return s

    return {"runtime's": so(), "spin=1": so(spin="1"), "spin=0": so(spin="0"), "opt=extended": so(level="ORT_ENABLE_EXTENDED"),
            "opt=basic": so(level="ORT_ENABLE_BASIC"), "mem_pattern=0": so(enable_mem_pattern=False),
            "arena=0": so(enable_cpu_mem_arena=False), "parallel": so(parallel=True)}


def variants(b, batches, threads, repeats):
    import onnxruntime as ort

    path = str(b.path(b.graphs["guided_eps"]))
    sess = {k: ort.InferenceSession(path, s, providers=["CPUExecutionProvider"])
            for k, s in variant_options(ort, threads).items()}
    from sami_rt.backends.onnxruntime import cpu_session_options

    sess["GroupNorm as LayerNormalization"] = ort.InferenceSession(
        fuse_group_norm(path), cpu_session_options(ort, threads), providers=["CPUExecutionProvider"])
    names = [i.name for i in sess["runtime's"].get_inputs()]
    for B in batches:
        feeds = dict(zip(names, inputs(b, B)))
        ref = sess["runtime's"].run(None, feeds)[0]
        diffs = {k: float(np.abs(s.run(None, feeds)[0] - ref).max()) for k, s in sess.items()}
        reps = max(5, repeats // 4) if B >= 64 else repeats
        m = interleaved({k: (lambda s=s: s.run(None, feeds)) for k, s in sess.items()}, reps)
        print(f"\nthreads {threads}, batch {B} ({reps} rounds, load {load():.2f}): median ms, ratio to the runtime's")
        base = m["runtime's"]
        for k, v in sorted(m.items(), key=lambda kv: kv[1]):
            print(f"  {v:9.2f}  {v / base:.2f}  max diff {diffs[k]:.1e}  {k}")


def profile(b, B, threads, calls=5):
    import onnxruntime as ort
    import torch

    from sami_reference.baseline import TorchBaseline
    from sami_rt.backends.onnxruntime import cpu_session_options

    args = inputs(b, B)
    so = cpu_session_options(ort, threads)
    so.enable_profiling = True
    so.profile_file_prefix = os.path.join(tempfile.mkdtemp(), "ort")
    s = ort.InferenceSession(str(b.path(b.graphs["guided_eps"])), so, providers=["CPUExecutionProvider"])
    feeds = dict(zip([i.name for i in s.get_inputs()], args))
    for _ in range(2):
        s.run(None, feeds)
    t0 = time.perf_counter()
    for _ in range(calls):
        s.run(None, feeds)
    wall = (time.perf_counter() - t0) / calls * 1e3
    events = json.load(open(s.end_profiling()))
    runs = [e for e in events if e.get("name") == "model_run"][-calls:]
    start = runs[0]["ts"]
    by_op = collections.Counter()
    for e in events:
        if e.get("cat") == "Node" and e["name"].endswith("_kernel_time") and e["ts"] >= start:
            by_op[e["args"]["op_name"]] += e["dur"] / 1e3 / calls
    total = sum(by_op.values())
    print(f"\nonnxruntime, batch {B}, {threads} threads: {wall:.1f} ms/call (profiled), kernels {total:.1f} ms, "
          f"load {load():.2f}")
    for op, ms in by_op.most_common(16):
        print(f"  {ms:8.2f} ms  {100 * ms / total:5.1f}%  {op}")

    torch.set_num_threads(threads)
    ref = TorchBaseline(b, threads)
    for _ in range(2):
        ref.guided_eps(*args)
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as tprofile

    t0 = time.perf_counter()
    with tprofile(activities=[ProfilerActivity.CPU]) as p:
        for _ in range(calls):
            ref.guided_eps(*args)
    wall = (time.perf_counter() - t0) / calls * 1e3
    ka = sorted(p.key_averages(), key=lambda e: -e.self_cpu_time_total)
    total = sum(e.self_cpu_time_total for e in ka) / 1e3 / calls
    print(f"\nPyTorch eager, batch {B}, {threads} threads: {wall:.1f} ms/call (profiled), self CPU {total:.1f} ms, "
          f"load {load():.2f}")
    for e in ka[:12]:
        ms = e.self_cpu_time_total / 1e3 / calls
        print(f"  {ms:8.2f} ms  {100 * ms / total:5.1f}%  {e.key}")


def one_session(b, batches, threads, spin, repeats):
    """The runtime's session options with thread spinning on or off, alone in this process: median ms per batch."""
    import onnxruntime as ort

    from sami_rt.backends.onnxruntime import cpu_session_options

    so = cpu_session_options(ort, threads)
    so.add_session_config_entry("session.intra_op.allow_spinning", spin)
    s = ort.InferenceSession(str(b.path(b.graphs["guided_eps"])), so, providers=["CPUExecutionProvider"])
    names = [i.name for i in s.get_inputs()]
    out = {}
    for B in batches:
        feeds = dict(zip(names, inputs(b, B)))
        reps = max(5, repeats // 4) if B >= 64 else repeats
        out[B] = interleaved({"s": lambda: s.run(None, feeds)}, reps)["s"]
    print(json.dumps(out))


def isolated(b, batches, threads, repeats, rounds=3):
    """Spinning on against off, each alone in a fresh process (no other session's threads
    spinning beside it), the two alternated over ``rounds``: medians over the rounds."""
    import subprocess

    res = {"1": collections.defaultdict(list), "0": collections.defaultdict(list)}
    for _ in range(rounds):
        for spin in ("1", "0"):
            cmd = [sys.executable, "-m", "benchmarks.bench_batch64", "--one-session", spin, "--threads", str(threads),
                   "--repeats", str(repeats), "--batch", *map(str, batches)]
            if b.root:
                cmd += ["--model", str(b.root)]
            r = json.loads(subprocess.run(cmd, capture_output=True, text=True, check=True).stdout.splitlines()[-1])
            for B, ms in r.items():
                res[spin][int(B)].append(ms)
    print(f"\nthreads {threads}, each setting alone in its process, {rounds} alternated rounds (load {load():.2f})")
    print("| batch | spinning on ms | spinning off (the runtime's since issue 19) ms | off / on |\n| --- | --- | --- | --- |")
    for B in batches:
        on, off = statistics.median(res["1"][B]), statistics.median(res["0"][B])
        print(f"| {B} | {on:.2f} | {off:.2f} | {off / on:.2f} |")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=None)
    ap.add_argument("--batch", type=int, nargs="+", default=None)
    ap.add_argument("--threads", type=int, nargs="+", default=[2, 1])
    ap.add_argument("--repeats", type=int, default=20, help="rounds at batch 1 and 16 (a quarter at 64, >= 5)")
    ap.add_argument("--variants", action="store_true")
    ap.add_argument("--profile", action="store_true")
    ap.add_argument("--isolated", action="store_true", help="spinning on/off, each alone in a process")
    ap.add_argument("--one-session", choices=["0", "1"], help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    report_machine()

    import onnxruntime as ort
    import torch

    from sami_rt.contract.bundle import read_bundle
    from sami_rt.runtime import DEFAULT_MODEL

    b = read_bundle(args.model or DEFAULT_MODEL)
    if args.one_session:
        one_session(b, args.batch, args.threads[0], args.one_session, args.repeats)
        return 0
    print(f"bundle {b.root}; onnxruntime {ort.__version__}, torch {torch.__version__}; {os.cpu_count()} CPUs; "
          f"load {load():.2f}; guided_eps {b.manifest.flops['guided_eps'] / 1e6:.1f} MFLOP per sample")
    if args.profile:
        for th in args.threads:
            for B in args.batch or [64]:
                profile(b, B, th)
    elif args.isolated:
        for th in args.threads:
            isolated(b, args.batch or [1, 16, 64], th, args.repeats)
    elif args.variants:
        for th in args.threads:
            variants(b, args.batch or [1, 16, 64], th, args.repeats)
    else:
        table(b, args.batch or [1, 16, 64], args.threads, args.repeats)
    return 0


if __name__ == "__main__":
    sys.exit(main())
