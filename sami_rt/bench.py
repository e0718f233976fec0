"""``sami-rt bench``: the runtime's figures against a registered baseline, in one process and one run.

Figures, for the loaded bundle and backend:
- per call: ``guided_eps`` and ``encoder`` latency at each batch size (median and interquartile range over
  ``repeats`` timed calls after ``warmup`` calls); with a baseline registered under the entry-point group
  ``sami_rt.baselines`` and its framework installed (``load_baseline``: the reference model in eager mode,
  denoiser forward plus autograd guidance, the way a research script does it), the same calls, interleaved
  with the runtime's so that machine noise hits both alike, and the ratio; the baseline runs on the
  runtime's card where it can, else on the CPU (its ``where`` says which);
- ``generate``: N samples, DDIM, one batch; the time inside backend calls and the loop's own share, and
  (when N is one of the batch sizes) the whole sample's time against steps x one ``guided_eps`` call;
- video: a synthetic 640x480 video (or the one given): decoding alone and ``encode_video`` (decoding
  included), interleaved over several rounds (median times, and the median of the rounds' ratios), where
  ``encode_video`` read luma planes also decoding alone to luma planes (decoding without the conversion), and
  inference alone on the decoded frames (decoding excluded), in frames per second;
- FLOPs of one step from the bundle (counted at export) and the achieved rate, and on a GPU whose peak is
  known, the fraction of that peak.
"""

from __future__ import annotations

import platform
import tempfile
import time
from pathlib import Path
from typing import Callable

import numpy as np

# Dense peak throughput (TFLOP/s) of cards we know: float32 (no tensor cores) and float16 tensor cores.
GPU_PEAKS = {
    "H100 SXM": (67.0, 989.0), "H100 PCIe": (51.0, 756.0), "H100 NVL": (60.0, 835.0), "H100": (67.0, 989.0),
    "H200": (67.0, 989.0), "A100": (19.5, 312.0), "L40S": (91.6, 362.0), "L4": (30.3, 121.0),
    "A10": (31.2, 125.0), "RTX 4090": (82.6, 165.2),
}


def gpu_name() -> str | None:
    """The first GPU's name from nvidia-smi, or None."""
    import shutil
    import subprocess

    if shutil.which("nvidia-smi") is None:
        return None
    try:
        r = subprocess.run(["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"], capture_output=True,
                           text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return r.stdout.strip().splitlines()[0] if r.returncode == 0 and r.stdout.strip() else None


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


def _interleaved(fns: dict[str, Callable[[], object]], repeats: int, warmup: int) -> dict[str, dict]:
    for _ in range(warmup):
        for f in fns.values():
            f()
    times: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(repeats):
        for k, f in fns.items():
            t0 = time.perf_counter()
            f()
            times[k].append(time.perf_counter() - t0)
    return {k: _stats(v) for k, v in times.items()}


def write_test_video(path: Path, frames: int, size=(640, 480)) -> None:
    """A grey video of a disk moving along a straight line (mp4v)."""
    import cv2

    W, H = size
    w = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 30.0, (W, H), isColor=False)
    if not w.isOpened():
        raise RuntimeError("OpenCV cannot write mp4 (mp4v) video here")
    yy, xx = np.mgrid[0:H, 0:W]
    r = H // 8
    for k in range(frames):
        f = k / max(frames - 1, 1)
        cx, cy = r + (W - 2 * r) * f, r + (H - 2 * r) * f
        w.write(np.where((xx - cx) ** 2 + (yy - cy) ** 2 < r * r, 230, 40).astype(np.uint8))
    w.release()


def decode_alone(path, luma: bool = False) -> int:
    """Decodes a video with OpenCV's defaults, dropping the frames (the floor ``encode_video`` is compared
    with); returns the number of frames. ``luma``: with the conversion to BGR off (``CAP_PROP_CONVERT_RGB``
    0), which for a yuv420p video hands over the luma plane: decoding's own cost."""
    from sami_rt.images import load_cv2

    cv2 = load_cv2()  # its log silenced: frames without BGR conversion draw a warning each
    cap = cv2.VideoCapture(str(path), cv2.CAP_ANY, [cv2.CAP_PROP_CONVERT_RGB, 0]) if luma else cv2.VideoCapture(str(path))
    n = 0
    while cap.read()[0]:
        n += 1
    cap.release()
    return n


BASELINE_GROUP = "sami_rt.baselines"


def load_baseline(bundle, threads: int = 0, device: str = "cpu"):
    """The comparison baseline another installed package registers under the entry-point group
    ``sami_rt.baselines`` (``sami_reference`` registers its PyTorch eager model), or None when none does. A
    baseline is built as ``cls(bundle, threads, device)`` and has ``guided_eps`` and ``encode`` on numpy arrays,
    ``key`` (the suffix of its figures' names), ``name`` (for tables), ``label`` (what it is, with its version),
    ``version`` and ``where``. An
    ImportError while loading it (its framework not installed) propagates to the caller."""
    from importlib.metadata import entry_points

    for ep in entry_points(group=BASELINE_GROUP):
        return ep.load()(bundle, threads, device)
    return None


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
        t0 = time.perf_counter()
        rt.generate(**kw)
        total = time.perf_counter() - t0
    finally:
        del be.guided_eps  # back to the class's method
    return {"seconds": total, "backend_seconds": inner["t"], "backend_calls": inner["calls"],
            "loop_share": 1 - inner["t"] / total}


def run_bench(rt, batches=(1, 16), repeats: int = 30, warmup: int = 5, n: int = 16, steps: int = 100,
              frames: int = 1000, video: str | Path | None = None, baseline: bool = True, threads: int = 0,
              log: Callable[[str], None] = lambda s: None) -> dict:
    """All figures as a dict (see the module docstring); ``baseline`` False skips PyTorch."""
    import cv2
    import onnxruntime

    b = rt.bundle
    be = rt.backend
    res: dict = {"meta": {
        "date": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()), "bundle": str(b.root),
        "backend": be.name, "device": getattr(be, "device", "?"), "python": platform.python_version(),
        "machine": platform.machine(), "processor": platform.processor() or platform.machine(),
        "onnxruntime": onnxruntime.__version__, "numpy": np.__version__, "opencv": cv2.__version__,
        "gpu": gpu_name(), "repeats": repeats, "warmup": warmup}}
    ref = None
    if not baseline:
        res["meta"]["baseline"] = "none: skipped"
    elif b.reference is None:
        res["meta"]["baseline"] = "none: the bundle has no reference weights"
    else:
        try:
            ref = load_baseline(b, threads, getattr(be, "device", "cpu"))
        except ImportError as e:
            res["meta"]["baseline"] = f"none: {e.name or 'its framework'} is not installed"
        else:
            if ref is None:
                res["meta"]["baseline"] = "none: no installed package registers one"
            else:
                res["meta"]["baseline"] = f"{ref.label} on {ref.where}"
                res["meta"]["baseline_key"], res["meta"]["baseline_name"] = ref.key, ref.name
                res["meta"][ref.key] = ref.version
    k = ref.key if ref is not None else None
    rng = np.random.default_rng()
    C, H, W = b.image_shape
    D = b.latent_dim

    # ----------------------------------------------------------------------------- per call
    res["calls"] = []
    for B in batches:
        x = rng.standard_normal((B, C, H, W)).astype(np.float32)
        x0 = rng.uniform(-1, 1, (B, C, H, W)).astype(np.float32)
        t = rng.integers(0, b.T, B).astype(np.int64)
        z = rng.standard_normal((B, D)).astype(np.float32)
        mask = np.ones((B, D), np.float32)
        scale = np.ones(B, np.float32)
        fns = {"guided_eps": lambda: be.guided_eps(x, t, z, mask, scale), "encoder": lambda: be.encode(x0)}
        if ref is not None:
            fns[f"guided_eps_{k}"] = lambda: ref.guided_eps(x, t, z, mask, scale)
            fns[f"encoder_{k}"] = lambda: ref.encode(x0)
        log(f"per call, batch {B}")
        st = _interleaved(fns, repeats, warmup)
        row = {"batch": B, **{k: v for k, v in st.items()}}
        if ref is not None:
            row["guided_eps_speedup"] = st[f"guided_eps_{k}"]["median_ms"] / st["guided_eps"]["median_ms"]
            row["encoder_speedup"] = st[f"encoder_{k}"]["median_ms"] / st["encoder"]["median_ms"]
            row["guided_eps_max_abs_diff"] = float(np.abs(be.guided_eps(x, t, z, mask, scale)
                                                          - ref.guided_eps(x, t, z, mask, scale)).max())
        flops = (b.manifest.get("flops") or {}).get("guided_eps")
        if flops:
            row["guided_eps_tflops_achieved"] = flops * B / (st["guided_eps"]["median_ms"] * 1e-3) / 1e12
        res["calls"].append(row)

    # ----------------------------------------------------------------------------- generate
    log(f"generate: {n} samples, {steps} DDIM steps")
    z = rng.standard_normal((n, D)).astype(np.float32)
    rt.generate(z=z, n=n, steps=min(3, b.T), sampler="ddim", batch=n)  # warm-up at this batch size
    gen = {"n": n, "steps": steps, **timed_generate(rt, z=z, n=n, steps=steps, sampler="ddim", batch=n)}
    total = gen["seconds"]
    call = next((c for c in res["calls"] if c["batch"] == n), None)
    if call is not None:  # the whole sample against steps x one call at its batch size: host overhead per step
        gen["vs_steps_x_call"] = total / (steps * call["guided_eps"]["median_ms"] * 1e-3)
    if ref is not None:
        from sami_rt.sampler import initial_noise, loop_numpy
        from sami_rt.schedule import respace, step_coefficients

        co = step_coefficients(b.abar, respace(b.T, steps), 0.0)
        ts = co["t"]
        xs = initial_noise(0, np.arange(n), b.image_shape)
        ones, tb = np.ones((n, D), np.float32), np.empty(n, np.int64)
        sc = np.ones(n, np.float32)

        def baseline_step(x_t, i):
            tb.fill(ts[i])
            return ref.guided_eps(x_t, tb, z, ones, sc)

        t0 = time.perf_counter()
        loop_numpy(baseline_step, xs, co["c_x"], co["c_eps"], co["sigma"], 0, np.arange(n))
        gen[f"{k}_seconds"] = time.perf_counter() - t0
        gen["speedup"] = gen[f"{k}_seconds"] / total
    res["generate"] = gen

    # ----------------------------------------------------------------------------- video
    with tempfile.TemporaryDirectory(prefix="sami-rt-bench-") as d:
        if video is None:
            video = Path(d) / "disk-640x480.mp4"
            log(f"video: writing {frames} frames of 640x480")
            write_test_video(video, frames)
        rounds = max(3, repeats // 10)
        log(f"video: decoding alone and encode_video, {rounds} rounds, interleaved")
        decodes, encodes, decodes_luma = [], [], []
        # warm-up: the stream encoder session is created, the file is in the page cache
        luma = rt.encode_video(video).luma
        for _ in range(rounds):  # interleaved, so that machine noise hits both alike; medians reported
            t0 = time.perf_counter()
            nf = decode_alone(video)
            decodes.append(time.perf_counter() - t0)
            if nf == 0:
                raise RuntimeError(f"{video}: no frames could be decoded")
            t0 = time.perf_counter()
            enc = rt.encode_video(video)
            encodes.append(time.perf_counter() - t0)
            if luma:  # the pipeline read luma planes: decoding's own cost, without the conversion to BGR
                t0 = time.perf_counter()
                decode_alone(video, luma=True)
                decodes_luma.append(time.perf_counter() - t0)
        decode, encode = float(np.median(decodes)), float(np.median(encodes))
        from sami_rt.images import to_model

        cap = cv2.VideoCapture(str(video))
        size = f"{int(cap.get(cv2.CAP_PROP_FRAME_WIDTH))}x{int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT))}"
        xs = []
        while True:
            ok, f = cap.read()
            if not ok:
                break
            xs.append(to_model(f, C, (H, W)))
        cap.release()
        xs = np.stack(xs)
        per = {"runtime": lambda: [be.encode(xs[i : i + 64]) for i in range(0, len(xs), 64)]}
        if ref is not None:
            per[k] = lambda: [ref.encode(xs[i : i + 64]) for i in range(0, len(xs), 64)]
        st = _interleaved(per, max(3, repeats // 10), 1)
        vid = {"frames": nf, "size": size,
               "decode_fps": nf / decode, "encode_fps": len(enc.frames) / encode,
               "inference_fps": nf / (st["runtime"]["median_ms"] * 1e-3)}
        vid["rounds"] = rounds
        vid["encode_vs_decode_per_round"] = [d / e for d, e in zip(decodes, encodes)]
        vid["encode_vs_decode"] = float(np.median(vid["encode_vs_decode_per_round"]))  # median of the rounds' ratios
        vid["luma"] = luma  # frames read as luma planes (grey model, yuv420p) rather than BGR
        if decodes_luma:
            vid["decode_luma_fps"] = nf / float(np.median(decodes_luma))
            vid["encode_vs_decode_luma"] = float(np.median([d / e for d, e in zip(decodes_luma, encodes)]))
        if ref is not None:
            vid[f"{k}_inference_fps"] = nf / (st[k]["median_ms"] * 1e-3)
        res["video"] = vid

    # ----------------------------------------------------------------------------- FLOPs and peak
    flops = b.manifest.get("flops") or {}
    if flops:
        res["flops_per_sample"] = flops
        res["generate"]["tflops_achieved"] = flops.get("guided_eps", 0) * n * steps / total / 1e12
        peak = gpu_peak(res["meta"]["gpu"]) if res["meta"]["device"] in ("cuda", "tensorrt") else None
        if peak:
            fp16 = bool(b.graphs_fp16) and getattr(be, "precision", "float32") == "float16"
            p = peak[1] if fp16 else peak[0]
            res["peak_tflops"] = p
            for row in res["calls"]:
                if "guided_eps_tflops_achieved" in row:
                    row["guided_eps_fraction_of_peak"] = row["guided_eps_tflops_achieved"] / p
    return res


def format_report(res: dict) -> str:
    """The figures as Markdown tables."""
    m = res["meta"]
    lines = [f"sami-rt bench, {m['date']}: {m['backend']}; baseline: {m['baseline']}", ""]
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
