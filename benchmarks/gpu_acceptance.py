"""The GPU acceptance of the performance work in one command, for a machine with an NVIDIA GPU.

    python benchmarks/gpu_acceptance.py [--out DIR] [--device tensorrt] [--device cuda] [--steps 1000]
                                        [--repeats 50] [--validate] [--config celeba64]

Builds the ``celeba64`` architecture with random weights (the figures are about speed, not quality: one
training step on random 64x64 images, so that the run directory is a real one), exports it with float16
graphs (and TensorRT engines where ``tensorrt`` is installed; without the export's parity check unless
``--validate``: the test suite checks parity on small models of the same families), then runs
``python -m sami_reference.bench`` at batch 1 with one ``--steps``-step sample on each device asked for, with
PyTorch eager on the same card as the baseline, and checks:

- one guided step at batch 1 at least 3x faster than PyTorch eager on the same card;
- the whole sample within 1.5x of ``steps`` x one guided step (no per-step host overhead to speak of).

Writes DIR/bench-DEVICE.json for each device and DIR/acceptance.json, prints a table, and exits 1 when a
criterion fails. Needs torch with CUDA, onnxruntime-gpu for ``cuda`` and ``pip install ".[trt]"`` for
``tensorrt``; ``--device cpu`` runs the same steps on the CPU (a smoke test of this script: the criteria
are GPU ones and are reported, not checked, there), and ``--config disks-small`` a small architecture
in place of celeba64. On the 2-core CPU machine the whole celeba64 export (float32 and float16 graphs, no
parity check) takes about 3.5 minutes and the CPU smoke run about 5 (benchmarks/RESULTS.md).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from sami_rt.hardware.cpuinfo import report_machine

ROOT = Path(__file__).resolve().parent.parent
STEP_SPEEDUP, SAMPLE_OVERHEAD = 3.0, 1.5  # the acceptance thresholds


def run(cmd: list[str], log: Path) -> None:
    """Runs a command with its output appended to ``log``; a failure stops the script with the log's tail."""
    t0 = time.perf_counter()
    with open(log, "a") as f:
        f.write(f"$ {' '.join(cmd)}\n")
        f.flush()
        r = subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT, cwd=ROOT)
    shown = " ".join(cmd[2:4]) if cmd[1] == "-m" else cmd[1]
    print(f"  {shown} ... {time.perf_counter() - t0:.1f} s", flush=True)
    if r.returncode:
        sys.exit(f"failed ({r.returncode}): {' '.join(cmd)}\n" + "\n".join(log.read_text().splitlines()[-30:]))


def random_images(folder: Path, n: int = 8, size: int = 64, seed: int = 0) -> None:
    import cv2

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for i in range(n):
        small = rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)
        cv2.imwrite(str(folder / f"{i:02d}.png"), cv2.resize(small, (size, size), interpolation=cv2.INTER_CUBIC))


def check(device: str, res: dict) -> dict:
    call = next(c for c in res["calls"] if c["batch"] == 1)
    gen = res["generate"]
    out = {"device": device, "backend": res["meta"]["backend"], "baseline": res["meta"].get("baseline"),
           "gpu": res["meta"].get("gpu"), "step_ms": call["guided_eps"]["median_ms"],
           "step_ms_torch": call.get("guided_eps_torch", {}).get("median_ms"),
           "step_speedup": call.get("guided_eps_speedup"), "sample_s": gen["seconds"], "steps": gen["steps"],
           "sample_vs_steps_x_step": gen.get("vs_steps_x_call"),
           "fraction_of_peak": call.get("guided_eps_fraction_of_peak")}
    same_card = "CUDA" in (out["baseline"] or "")
    out["step_speedup_ok"] = (out["step_speedup"] or 0) >= STEP_SPEEDUP if same_card else None
    out["sample_overhead_ok"] = (out["sample_vs_steps_x_step"] or np.inf) <= SAMPLE_OVERHEAD if device != "cpu" else None
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=Path("gpu-acceptance"), help="where the figures go")
    ap.add_argument("--device", action="append", choices=["tensorrt", "cuda", "cpu"],
                    help="runtime device (repeat; default: tensorrt and cuda)")
    ap.add_argument("--steps", type=int, default=1000, help="steps of the timed sample (default 1000)")
    ap.add_argument("--repeats", type=int, default=50, help="timed calls per per-call figure (default 50)")
    ap.add_argument("--validate", action="store_true", help="export with the onnxruntime parity check (slow)")
    ap.add_argument("--config", default="celeba64", help="architecture (a train/config.py preset; default celeba64)")
    args = ap.parse_args(argv)
    report_machine()
    devices = args.device or ["tensorrt", "cuda"]
    args.out.mkdir(parents=True, exist_ok=True)
    log = args.out / "log.txt"
    log.write_text("")
    py = sys.executable
    results = []
    with tempfile.TemporaryDirectory(prefix="sami-rt-gpu-acceptance-") as d:
        work = Path(d)
        print(f"{args.config} with random weights: one training step, then the export", flush=True)
        random_images(work / "images")
        run([py, "train/run.py", "--config", args.config, "--dataset", "folder", "--data-path", str(work / "images"),
             "--steps", "1", "--batch", "2", "--out", str(work / "run"), "--no-eval"], log)
        export = [py, "export/run.py", str(work / "run"), "-o", str(work / "bundle"), "--fp16"]
        if "tensorrt" in devices:
            export.append("--tensorrt")
        if not args.validate:
            export.append("--no-validate")
        run(export, log)
        for dev in devices:
            print(f"python -m sami_reference.bench --device {dev}", flush=True)
            js = args.out / f"bench-{dev}.json"
            run([py, "-m", "sami_reference.bench", "--model", str(work / "bundle"), "--device", dev, "--batch", "1",
                 "-n", "1", "--steps", str(args.steps), "--repeats", str(args.repeats), "--frames", "300",
                 "--json", str(js)], log)
            results.append(check(dev, json.loads(js.read_text())))
    (args.out / "acceptance.json").write_text(json.dumps(results, indent=2) + "\n")
    print("\n| device | backend | step ms | PyTorch ms (where) | speed-up (>= 3x) | sample / (steps x step) (<= 1.5) |")
    print("| --- | --- | --- | --- | --- | --- |")
    failed = False
    for r in results:
        def mark(ok):
            return "" if ok is None else (" ok" if ok else " FAILS")
        torch_ms = f"{r['step_ms_torch']:.3f} ({r['baseline']})" if r["step_ms_torch"] else f"- ({r['baseline']})"
        sp = f"{r['step_speedup']:.2f}x{mark(r['step_speedup_ok'])}" if r["step_speedup"] else "-"
        ov = f"{r['sample_vs_steps_x_step']:.2f}{mark(r['sample_overhead_ok'])}" if r["sample_vs_steps_x_step"] else "-"
        print(f"| {r['device']} | {r['backend']} | {r['step_ms']:.3f} | {torch_ms} | {sp} | {ov} |")
        failed |= r["step_speedup_ok"] is False or r["sample_overhead_ok"] is False
    print(f"figures -> {args.out}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
