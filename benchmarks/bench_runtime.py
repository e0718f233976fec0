"""Runtime figures on this machine: generate, the loop's own overhead, video encoding, peak memory.

    python benchmarks/bench_runtime.py [--model BUNDLE] [--n 16] [--steps 100] [--frames 300]

- generate: n samples, DDIM, guided by examples/guide.png; wall time, the time spent inside backend calls
  (measured around each call), and the loop's share = 1 - backend / total.
- peak resident memory of a `sami-rt generate` process (16 samples) and of `sami-rt encode` of the video.
- video: a 640x480 video of a moving disk (written here, `frames` frames): encoding throughput with decoding
  included, and decoding alone, frames/s.
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from sami_rt.hardware.cpuinfo import report_machine

ROOT = Path(__file__).resolve().parent.parent


def peak_rss_mb(cmd: list[str], cwd: Path) -> tuple[float, float]:
    """(peak RSS in MB, wall seconds) of a child process."""
    t0 = time.perf_counter()
    code = ("import resource, subprocess, sys; r = subprocess.run(sys.argv[1:], capture_output=True); "
            "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss); sys.exit(r.returncode)")
    r = subprocess.run([sys.executable, "-c", code, *cmd], capture_output=True, text=True, cwd=cwd)
    if r.returncode:
        raise RuntimeError(f"{' '.join(cmd)} failed: {r.stderr[-500:]}")
    return int(r.stdout.strip()) / 1024, time.perf_counter() - t0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=None)
    ap.add_argument("--n", type=int, default=16)
    ap.add_argument("--steps", type=int, default=100)
    ap.add_argument("--frames", type=int, default=300)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args(argv)
    report_machine()

    import cv2
    import onnxruntime

    from sami_rt.cli.benchmark import timed_generate
    from sami_rt.media.disks import write_disk_video
    from sami_rt.runtime import Runtime
    from sami_rt.sampling.loop import has_extension
    from sami_rt.video.frames import decode_alone

    rt = Runtime(args.model, device="cpu")
    guide = str(ROOT / "examples" / "guide.png")
    rt.generate(guide=guide, n=args.n, steps=5, sampler="ddim")  # warm-up
    g = timed_generate(rt, guide=guide, n=args.n, steps=args.steps, sampler="ddim", batch=args.n)
    res = {"generate_s": g["seconds"], "backend_s": g["backend_seconds"], "backend_calls": g["backend_calls"],
           "loop_share": g["loop_share"], "cpp_loop": has_extension()}
    with tempfile.TemporaryDirectory() as d:
        d = Path(d)
        video = d / "disk640.mp4"
        write_disk_video(video, args.frames)
        t0 = time.perf_counter()
        n = decode_alone(video)
        decode = time.perf_counter() - t0
        t0 = time.perf_counter()
        v = rt.encode_video(video)
        enc = time.perf_counter() - t0
        res.update(video_frames=n, decode_fps=n / decode, encode_fps=len(v.frames) / enc,
                   encode_vs_decode=(len(v.frames) / enc) / (n / decode))
        cli = [sys.executable, "-m", "sami_rt.cli.main"]
        model = ["--model", args.model] if args.model else []
        res["generate_cli_peak_mb"], res["generate_cli_s"] = peak_rss_mb(
            [*cli, "generate", "--guide", guide, "-n", "16", "--steps", str(args.steps), "-o", str(d / "g.png"), *model], d)
        res["encode_cli_peak_mb"], res["encode_cli_s"] = peak_rss_mb([*cli, "encode", str(video), "-o", str(d / "v.npz"), *model], d)
    res["meta"] = {"onnxruntime": onnxruntime.__version__, "opencv": cv2.__version__, "numpy": np.__version__,
                   "python": platform.python_version(), "machine": platform.machine(), "n": args.n,
                   "steps": args.steps}
    for k, v in res.items():
        print(f"{k}: {v:.4g}" if isinstance(v, float) else f"{k}: {v}")
    if args.json:
        args.json.write_text(json.dumps(res, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
