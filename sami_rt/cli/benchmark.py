"""``sami-rt bench``: the runtime's figures for the loaded bundle and backend, in one process and one run.

- per call: ``guided_eps`` and ``encoder`` latency at each batch size (median and interquartile range over
  ``repeats`` timed calls after ``warmup`` calls);
- ``generate``: N samples, DDIM, one batch; the time inside backend calls and the loop's own share, and
  (when N is one of the batch sizes) the whole sample's time against steps x one ``guided_eps`` call;
- video: a synthetic 640x480 video (or the one given): decoding alone and ``encode_video`` (decoding
  included), interleaved over several rounds (median times, and the median of the rounds' ratios), where
  ``encode_video`` read luma planes also decoding alone to luma planes (decoding without the conversion), and
  inference alone on the decoded frames (decoding excluded), in frames per second;
- FLOPs of one step from the bundle (counted at export) and the achieved rate, and on a GPU whose peak is
  known, the fraction of that peak.

A comparison baseline can be handed to ``run_bench``: any object with the backends' ``guided_eps`` and
``encode`` on numpy arrays, and ``key`` (the suffix of its figures' names), ``name`` (for tables), ``label``
(what it is, with its version), ``version`` and ``where`` (the device it runs on). Its calls are then
interleaved with the runtime's, so that machine noise hits both alike, and the ratios reported.
``python -m sami_reference.bench`` does that with the reference model in eager mode; this package never
loads one itself.
"""

from __future__ import annotations

import platform
import tempfile
import time
from pathlib import Path
from typing import Callable

import numpy as np

from sami_rt.contract.format import GRAPHS

# Dense peak throughput (TFLOP/s) of cards we know: float32 (no tensor cores) and float16 tensor cores.
GPU_PEAKS = {
    "H100 SXM": (67.0, 989.0), "H100 PCIe": (51.0, 756.0), "H100 NVL": (60.0, 835.0), "H100": (67.0, 989.0),
    "H200": (67.0, 989.0), "A100": (19.5, 312.0), "L40S": (91.6, 362.0), "L4": (30.3, 121.0),
    "A10": (31.2, 125.0), "RTX 4090": (82.6, 165.2),
}
Log = Callable[[str], None]


def gpu_peak(name: str | None) -> tuple[float, float] | None:
    if not name:
        return None
    for key in sorted(GPU_PEAKS, key=len, reverse=True):  # most specific first
        if key.lower() in name.lower():
            return GPU_PEAKS[key]
    return None


def _stats(seconds: list[float]) -> dict:
    ms = np.asarray(seconds) * 1e3
    q1, q3 = np.percentile(ms, [25, 75])
    return {"median_ms": float(np.median(ms)), "iqr_ms": float(q3 - q1), "min_ms": float(ms.min())}


def _interleaved(fns: dict[str, Callable[[], object]], repeats: int, warmup: int,
                 settle: bool = False) -> dict[str, dict]:
    """Rounds that visit every entry in turn (machine noise hits all alike); ``settle``: each visit first makes
    one untimed call, which absorbs the switch from the previous library (its thread pool waking, the other's
    still spinning: on 2 vCPUs that cost the eager reference up to 20x in ``--compare``)."""
    for _ in range(warmup):
        for f in fns.values():
            f()
    times: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(repeats):
        for k, f in fns.items():
            if settle:
                f()
            t0 = time.perf_counter()
            f()
            times[k].append(time.perf_counter() - t0)
    return {k: _stats(v) for k, v in times.items()}


def _timed(f: Callable[[], object]) -> tuple[object, float]:
    t0 = time.perf_counter()
    out = f()
    return out, time.perf_counter() - t0


def timed_generate(rt, **kw) -> dict:
    """One ``rt.generate(**kw)``, timed as a whole and inside its backend calls: seconds, backend_seconds,
    backend_calls and loop_share (1 - backend / total, the loop's own overhead)."""
    be = rt.backend
    inner = {"t": 0.0, "calls": 0}
    real = be.guided_eps

    def timed(*a):
        t0 = time.perf_counter()
        out = real(*a)
        inner["t"] += time.perf_counter() - t0
        inner["calls"] += 1
        return out

    be.guided_eps = timed
    try:
        _, total = _timed(lambda: rt.generate(**kw))
    finally:
        del be.guided_eps  # back to the class's method
    return {"seconds": total, "backend_seconds": inner["t"], "backend_calls": inner["calls"],
            "loop_share": 1 - inner["t"] / total}


# ---------------------------------------------------------------------------------------------- meta
def bench_meta(rt, repeats: int, warmup: int, baseline=None) -> dict:
    """Date, bundle, backend, versions, the GPU and the baseline (``"none"`` without one)."""
    import cv2
    import onnxruntime

    from sami_rt.hardware.cpuinfo import bf16_support, cpu_model, flags_line, machine_line
    from sami_rt.hardware.gpu import gpu_name

    be = rt.backend
    meta = {"date": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()), "bundle": str(rt.bundle.root),
            "backend": be.name, "device": be.device, "python": platform.python_version(),
            "machine": platform.machine(), "processor": platform.processor() or platform.machine(),
            "onnxruntime": onnxruntime.__version__, "numpy": np.__version__, "opencv": cv2.__version__,
            "gpu": gpu_name(), "repeats": repeats, "warmup": warmup, "baseline": "none",
            "precision": be.precision, "cpu": cpu_model(), "cpu_flags": flags_line(), "bf16": bf16_support()[1],
            "cpu_line": machine_line()}
    if baseline is not None:
        meta["baseline"] = f"{baseline.label} on {baseline.where}"
        meta["baseline_key"], meta["baseline_name"] = baseline.key, baseline.name
        meta[baseline.key] = baseline.version
    return meta


# ----------------------------------------------------------------------------------------- per call
def bench_calls(rt, batches, repeats: int, warmup: int, baseline=None, log: Log = lambda s: None) -> list[dict]:
    """Per batch size: ``guided_eps`` and ``encoder`` latency on the contract's example inputs (and the
    baseline's, its ratios and its largest difference from the runtime's ``guided_eps``)."""
    b, be, ref = rt.bundle, rt.backend, baseline
    rng = np.random.default_rng()
    flops = b.manifest.flops.get("guided_eps")
    rows = []
    for B in batches:
        g = GRAPHS["guided_eps"].example_inputs(rng, B, b.manifest.dims, b.manifest.T)
        x0 = GRAPHS["encoder"].example_inputs(rng, B, b.manifest.dims, b.manifest.T)["x"]
        args = (g["x_t"], g["t"], g["z"], g["mask"], g["scale"])
        fns = {"guided_eps": lambda: be.guided_eps(*args), "encoder": lambda: be.encode(x0)}
        if ref is not None:
            fns[f"guided_eps_{ref.key}"] = lambda: ref.guided_eps(*args)
            fns[f"encoder_{ref.key}"] = lambda: ref.encode(x0)
        log(f"per call, batch {B}")
        row = {"batch": B, **_interleaved(fns, repeats, warmup)}
        if ref is not None:
            for call in ("guided_eps", "encoder"):
                row[f"{call}_speedup"] = row[f"{call}_{ref.key}"]["median_ms"] / row[call]["median_ms"]
            row["guided_eps_max_abs_diff"] = float(np.abs(be.guided_eps(*args) - ref.guided_eps(*args)).max())
        if flops:
            row["guided_eps_tflops_achieved"] = flops * B / (row["guided_eps"]["median_ms"] * 1e-3) / 1e12
        rows.append(row)
    return rows


# ----------------------------------------------------------------------------------------- generate
def baseline_sample_seconds(bundle, baseline, z: np.ndarray, steps: int) -> float:
    """Seconds for the baseline to draw ``len(z)`` DDIM samples guided by ``z``: the runtime's numpy loop
    and its step (``sampler.model_step``) around the baseline's ``guided_eps``."""
    from sami_rt.sampling.loop import initial_noise, loop_numpy, model_step
    from sami_rt.sampling.schedule import respace, step_coefficients

    n, D = z.shape
    co = step_coefficients(bundle.manifest.abar, respace(bundle.manifest.T, steps), 0.0)
    step = model_step(baseline, co["t"], n, z, np.ones((n, D), np.float32), np.ones(n, np.float32))
    x = initial_noise(0, np.arange(n), bundle.manifest.image.shape)
    return _timed(lambda: loop_numpy(step, x, co["c_x"], co["c_eps"], co["sigma"], 0, np.arange(n)))[1]


def bench_generate(rt, n: int, steps: int, calls: list[dict], baseline=None, log: Log = lambda s: None) -> dict:
    """A full DDIM ``generate`` of n samples in one batch, timed inside and out (``timed_generate``); against
    steps x one ``guided_eps`` call where n is one of the per-call batch sizes; the baseline's time."""
    b = rt.bundle
    log(f"generate: {n} samples, {steps} DDIM steps")
    z = np.random.default_rng().standard_normal((n, b.manifest.latent_dim)).astype(np.float32)
    rt.generate(z=z, n=n, steps=min(3, b.manifest.T), sampler="ddim", batch=n)  # warm-up at this batch size
    gen = {"n": n, "steps": steps, **timed_generate(rt, z=z, n=n, steps=steps, sampler="ddim", batch=n)}
    call = next((c for c in calls if c["batch"] == n), None)
    if call is not None:  # the whole sample against steps x one call at its batch size: host overhead per step
        gen["vs_steps_x_call"] = gen["seconds"] / (steps * call["guided_eps"]["median_ms"] * 1e-3)
    if baseline is not None:
        gen[f"{baseline.key}_seconds"] = baseline_sample_seconds(b, baseline, z, steps)
        gen["speedup"] = gen[f"{baseline.key}_seconds"] / gen["seconds"]
    return gen


# -------------------------------------------------------------------------------------------- video
def bench_video(rt, video: Path, repeats: int, baseline=None, log: Log = lambda s: None) -> dict:
    """Decoding alone against ``encode_video`` in interleaved rounds (and decoding alone to luma planes where
    the pipeline read them); inference alone on the decoded frames."""
    from sami_rt.video.frames import decode_alone, model_frames

    rounds = max(3, repeats // 10)
    log(f"video: decoding alone and encode_video, {rounds} rounds, interleaved")
    luma = rt.encode_video(video).luma  # warm-up: the stream encoder session is created, the file is cached
    decodes, encodes, decodes_luma = [], [], []
    for _ in range(rounds):  # interleaved, so that machine noise hits both alike; medians reported
        nf, dt = _timed(lambda: decode_alone(video))
        decodes.append(dt)
        if nf == 0:
            raise RuntimeError(f"{video}: no frames could be decoded")
        enc, dt = _timed(lambda: rt.encode_video(video))
        encodes.append(dt)
        if luma:  # the pipeline read luma planes: decoding's own cost, without the conversion to BGR
            decodes_luma.append(_timed(lambda: decode_alone(video, luma=True))[1])
    xs, (w, h) = model_frames(video, rt.bundle.manifest.image)
    per = {"runtime": rt.backend.encode}
    if baseline is not None:
        per[baseline.key] = baseline.encode
    st = _interleaved({k: (lambda f=f: [f(xs[i : i + 64]) for i in range(0, len(xs), 64)]) for k, f in per.items()},
                      rounds, 1)
    ratios = [d / e for d, e in zip(decodes, encodes)]
    vid = {"frames": nf, "size": f"{w}x{h}", "decode_fps": nf / float(np.median(decodes)),
           "encode_fps": len(enc.frames) / float(np.median(encodes)),
           "inference_fps": nf / (st["runtime"]["median_ms"] * 1e-3), "rounds": rounds,
           "encode_vs_decode_per_round": ratios,
           "encode_vs_decode": float(np.median(ratios)),  # the median of the rounds' ratios
           "luma": luma}  # frames read as luma planes (grey model, yuv420p) rather than BGR
    if decodes_luma:
        vid["decode_luma_fps"] = nf / float(np.median(decodes_luma))
        vid["encode_vs_decode_luma"] = float(np.median([d / e for d, e in zip(decodes_luma, encodes)]))
    if baseline is not None:
        vid[f"{baseline.key}_inference_fps"] = nf / (st[baseline.key]["median_ms"] * 1e-3)
    return vid


def bench_video_file(rt, video: str | Path | None, frames: int, repeats: int, baseline=None,
                     log: Log = lambda s: None) -> dict:
    """``bench_video`` on ``video``, or on a synthetic 640x480 video of ``frames`` frames written for it."""
    from sami_rt.media.disks import write_disk_video

    if video is not None:
        return bench_video(rt, Path(video), repeats, baseline, log)
    with tempfile.TemporaryDirectory(prefix="sami-rt-bench-") as d:
        path = Path(d) / "disk-640x480.mp4"
        log(f"video: writing {frames} frames of 640x480")
        write_disk_video(path, frames)
        return bench_video(rt, path, repeats, baseline, log)


# -------------------------------------------------------------------------------------------- FLOPs
def add_flops(res: dict, rt) -> None:
    """The bundle's FLOP counts, the rate ``generate`` achieved, and on a GPU whose peak is known, each
    call's fraction of that peak (float16 or float32, as the backend runs)."""
    b, be = rt.bundle, rt.backend
    flops = b.manifest.flops
    if not flops:
        return
    g = res["generate"]
    res["flops_per_sample"] = flops
    g["tflops_achieved"] = flops.get("guided_eps", 0) * g["n"] * g["steps"] / g["seconds"] / 1e12
    peak = gpu_peak(res["meta"]["gpu"]) if res["meta"]["device"] in ("cuda", "tensorrt") else None
    if peak:
        fp16 = bool(b.graphs_fp16) and be.precision == "float16"
        p = peak[1] if fp16 else peak[0]
        res["peak_tflops"] = p
        for row in res["calls"]:
            if "guided_eps_tflops_achieved" in row:
                row["guided_eps_fraction_of_peak"] = row["guided_eps_tflops_achieved"] / p


def run_bench(rt, batches=(1, 16), repeats: int = 30, warmup: int = 5, n: int = 16, steps: int = 100,
              frames: int = 1000, video: str | Path | None = None, baseline=None, log: Log = lambda s: None) -> dict:
    """All figures as a dict (see the module docstring); ``baseline``: an object to compare with, or None."""
    res = {"meta": bench_meta(rt, repeats, warmup, baseline)}
    res["calls"] = bench_calls(rt, batches, repeats, warmup, baseline, log)
    res["generate"] = bench_generate(rt, n, steps, res["calls"], baseline, log)
    res["video"] = bench_video_file(rt, video, frames, repeats, baseline, log)
    add_flops(res, rt)
    from sami_rt.hardware.cpuinfo import peak_rss_mib

    res["meta"]["peak_rss_mib"] = peak_rss_mib()
    return res


def format_report(res: dict) -> str:
    """The figures as Markdown tables."""
    m = res["meta"]
    lines = [f"sami-rt bench, {m['date']}: {m['backend']}; baseline: {m['baseline']}"]
    lines += [m["cpu_line"], f"peak RSS {m['peak_rss_mib']:.0f} MiB", ""] if "cpu_line" in m else [""]
    k = m.get("baseline_key")
    name = m.get("baseline_name")
    head = "| batch | call | runtime ms (median, IQR) |" + (f" {name} ms | speed-up |" if k else "")
    lines += [head, "|" + " --- |" * (head.count("|") - 1)]
    for r in res["calls"]:
        for call in ("guided_eps", "encoder"):
            s = r[call]
            row = f"| {r['batch']} | {call} | {s['median_ms']:.3f} ({s['iqr_ms']:.3f}) |"
            if k:
                ts = r[f"{call}_{k}"]
                row += f" {ts['median_ms']:.3f} ({ts['iqr_ms']:.3f}) | {r[f'{call}_speedup']:.2f}x |"
            lines.append(row)
    g = res["generate"]
    lines += ["", f"generate: {g['n']} samples x {g['steps']} DDIM steps in {g['seconds']:.3f} s; backend calls "
              f"{g['backend_seconds']:.3f} s; the loop's own share {100 * g['loop_share']:.2f}%"
              + (f"; {g['vs_steps_x_call']:.2f}x {g['steps']} x one guided_eps call at batch {g['n']}"
                 if "vs_steps_x_call" in g else "")
              + (f"; {name} {g[f'{k}_seconds']:.3f} s ({g['speedup']:.2f}x)" if "speedup" in g else "")]
    v = res["video"]
    per = ", ".join(f"{100 * r:.0f}" for r in v["encode_vs_decode_per_round"])
    lines.append(f"video ({v['frames']} frames, {v['size']}; medians of {v['rounds']} interleaved rounds): decoding alone "
                 f"{v['decode_fps']:.0f} frames/s; encode_video (decoding included) {v['encode_fps']:.0f} frames/s = "
                 f"{100 * v['encode_vs_decode']:.0f}% of decoding (median of the rounds: {per}%), frames read as "
                 + ("luma planes" if v.get("luma") else "BGR")
                 + (f"; decoding alone to luma planes {v['decode_luma_fps']:.0f} frames/s "
                    f"({100 * v['encode_vs_decode_luma']:.0f}% of that)" if "decode_luma_fps" in v else "")
                 + f"; inference alone {v['inference_fps']:.0f} frames/s"
                 + (f" ({name} {v[f'{k}_inference_fps']:.0f})" if k and f"{k}_inference_fps" in v else ""))
    if "flops_per_sample" in res:
        f = res["flops_per_sample"]
        lines.append(f"FLOPs per sample: guided_eps {f.get('guided_eps', 0) / 1e6:.1f} M, encoder "
                     f"{f.get('encoder', 0) / 1e6:.1f} M; generate achieved {g['tflops_achieved'] * 1e3:.2f} GFLOP/s")
    if "peak_tflops" in res:
        best = max(r.get("guided_eps_fraction_of_peak", 0) for r in res["calls"])
        lines.append(f"GPU {m['gpu']}: peak {res['peak_tflops']:.0f} TFLOP/s; guided_eps reaches {100 * best:.2f}% of it")
    return "\n".join(lines)
