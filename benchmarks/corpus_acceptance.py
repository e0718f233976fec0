"""Issue 20's corpus acceptance: 20 generated videos plus a truncated video and a file that is not a video, through
`sami-rt encode-corpus` locally (a process pool) and with --ray (a local Ray instance); the outputs must be the
same bytes and the two failures recorded. Then a --ray run killed (SIGKILL, its whole process group) once half
the outputs exist, and a rerun that must skip every output the killed run completed and end with the same
bytes again.

    python -m benchmarks.corpus_acceptance --out /tmp/corpus-acc [--workers 2] [--seed N]

Prints a Markdown table for benchmarks/RESULTS.md. Needs the [ray] extra.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from sami_rt.hardware.cpuinfo import report_machine
from sami_rt.media.images import load_cv2, write_video


def make_inputs(root: Path, seed: int, n: int = 20) -> list[Path]:
    """n grey 32x32 MP4 videos of a disk on a random straight line (8..16 frames), an MJPEG AVI cut at 60% of its
    bytes (its container still declares all 40 frames) and a text file named like a video."""
    cv2 = load_cv2()
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)

    def video(path: Path, frames: int, fourcc: str) -> Path:
        (x, y), (dx, dy) = rng.uniform(8, 24, 2), rng.uniform(-1.5, 1.5, 2)
        return write_video(path, (cv2.circle(np.zeros((32, 32), np.uint8), (int(x + k * dx) % 32, int(y + k * dy) % 32),
                                             5, 255, -1) for k in range(frames)), fourcc=fourcc)

    paths = [video(root / f"clip{i:02d}.mp4", int(rng.integers(8, 17)), "mp4v") for i in range(n)]
    full = video(root / "full.avi", 40, "MJPG")
    (root / "cut.avi").write_bytes(full.read_bytes()[: full.stat().st_size * 3 // 5])
    full.unlink()
    (root / "notes.mp4").write_text("a text file, not a video\n")
    return paths + [root / "cut.avi", root / "notes.mp4"]


def command(inputs, out: Path, workers: int, ray: bool) -> list[str]:
    cmd = [sys.executable, "-m", "sami_rt.cli.main", "encode-corpus", *map(str, inputs), "-o", str(out),
           "--device", "cpu", "--workers", str(workers)]
    return cmd + (["--ray"] if ray else [])


def run(cmd) -> tuple[int, float, str]:
    t0 = time.perf_counter()
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=1800)
    return p.returncode, time.perf_counter() - t0, p.stderr


def outputs(out: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(out.glob("*.npz"))}


def rows(out: Path) -> list[dict]:
    lines = (out / "index.jsonl").read_text().splitlines()
    return [{k: v for k, v in json.loads(line).items() if k != "seconds"} for line in lines if line.strip()]


def killed_then_rerun(inputs, out: Path, workers: int) -> dict:
    """A --ray run SIGKILLed (process group) once half the good outputs exist, then the same command again."""
    target = (len(inputs) - 2) // 2
    p = subprocess.Popen(command(inputs, out, workers, True), stdout=subprocess.DEVNULL,
                         stderr=subprocess.DEVNULL, start_new_session=True)
    t0 = time.perf_counter()
    while len(list(out.glob("*.npz"))) < target and p.poll() is None and time.perf_counter() - t0 < 1800:
        time.sleep(0.05)
    os.killpg(p.pid, signal.SIGKILL)
    p.wait()
    before = {q.name: q.stat().st_mtime_ns for q in out.glob("*.npz")}
    partial = [q.name for q in out.iterdir() if q.name.endswith(".tmp")]
    code, secs, err = run(command(inputs, out, workers, True))
    after = {q.name: q.stat().st_mtime_ns for q in out.glob("*.npz")}
    status = [r["status"] for r in rows(out)]
    return dict(complete_at_kill=len(before), temp_files_at_kill=len(partial), rerun_exit=code, rerun_s=secs,
                skipped=status.count("skipped"), encoded=status.count("ok"), failed=status.count("failed"),
                untouched=all(after.get(k) == v for k, v in before.items()))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, required=True, help="work directory (emptied first)")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--seed", type=int, default=None, help="input seed (default: drawn and printed)")
    a = ap.parse_args(argv)
    report_machine()
    seed = int(np.random.SeedSequence().entropy % 2**31) if a.seed is None else a.seed
    print(f"seed {seed}; load {open('/proc/loadavg').read().split()[:3]}", flush=True)
    shutil.rmtree(a.out, ignore_errors=True)
    inputs = make_inputs(a.out / "in", seed)
    res = {}
    for name, ray in (("local", False), ("ray", True)):
        code, secs, err = run(command(inputs, a.out / name, a.workers, ray))
        res[name] = (code, secs, rows(a.out / name), outputs(a.out / name))
        print(f"{name}: exit {code}, {secs:.1f} s; {err.strip().splitlines()[-1]}", flush=True)
    same_bytes = res["local"][3] == res["ray"][3]
    same_rows = res["local"][2] == res["ray"][2]
    failures = [(r["path"].split("/")[-1], r["error"]) for r in res["ray"][2] if r["status"] == "failed"]
    k = killed_then_rerun(inputs, a.out / "killed", a.workers)
    k["same_bytes_as_local"] = outputs(a.out / "killed") == res["local"][3]
    print(f"\nload at the end {open('/proc/loadavg').read().split()[:3]}\n")
    print("| check | result |\n| --- | --- |")
    print(f"| local run (--workers {a.workers}) | exit {res['local'][0]}, {res['local'][1]:.1f} s, "
          f"{len(res['local'][3])} outputs |")
    print(f"| --ray run (--workers {a.workers}, local Ray) | exit {res['ray'][0]}, {res['ray'][1]:.1f} s, "
          f"{len(res['ray'][3])} outputs |")
    print(f"| outputs byte-identical / index rows identical (seconds aside) | {same_bytes} / {same_rows} |")
    for name, err in failures:
        print(f"| failed row: {name} | {err} |")
    print(f"| killed --ray run: outputs complete at the kill / temporary files left | {k['complete_at_kill']} / "
          f"{k['temp_files_at_kill']} |")
    print(f"| rerun: exit, seconds, skipped / encoded / failed | {k['rerun_exit']}, {k['rerun_s']:.1f} s, "
          f"{k['skipped']} / {k['encoded']} / {k['failed']} |")
    print(f"| rerun left the killed run's outputs untouched / final bytes equal the local run's | {k['untouched']} / "
          f"{k['same_bytes_as_local']} |")
    ok = (same_bytes and same_rows and len(failures) == 2 and k["untouched"] and k["same_bytes_as_local"]
          and k["skipped"] >= k["complete_at_kill"])
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
