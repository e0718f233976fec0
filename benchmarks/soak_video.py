"""Soak: encode the same video many times in one process; resident memory must stay flat.

    python -m benchmarks.soak_video [--video examples/moving_disk.mp4] [--times 50] [--model BUNDLE]

Prints the resident set size (from /proc/self/status, VmRSS) after the first pass and every tenth, and the
growth from the first pass to the last.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from sami_rt.hardware.cpuinfo import report_machine

ROOT = Path(__file__).resolve().parent.parent


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--video", type=Path, default=ROOT / "examples" / "moving_disk.mp4")
    ap.add_argument("--times", type=int, default=50)
    ap.add_argument("--model", default=None)
    args = ap.parse_args(argv)
    report_machine()
    from sami_rt.runtime import Runtime

    rt = Runtime(args.model, device="cpu")
    first = None
    for k in range(1, args.times + 1):
        v = rt.encode_video(args.video)
        if k == 1 or k % 10 == 0:
            r = rss_mb()
            first = first if first is not None else r
            print(f"pass {k:3d}: {len(v.frames)} frames, RSS {r:.1f} MB")
    print(f"growth from pass 1 to pass {args.times}: {rss_mb() - first:+.1f} MB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
