"""Video encoding against decoding alone, and the pipeline's choices measured against their alternatives.

    python benchmarks/bench_video.py [--frames 1000] [--rounds 6] [--model BUNDLE]

A synthetic 640x480 mp4 (sami_rt.media.disks.write_disk_video). Each round times, in one process and interleaved
so that machine noise hits all alike: decoding alone (cv2.VideoCapture with OpenCV's defaults, frames
read and dropped), decoding alone to luma planes (the same with CAP_PROP_CONVERT_RGB off), then
``encode_video`` as shipped and with one choice undone (``sami_rt.video.encode.encode_frames``'s own arguments):
- ``BGR frames``: frames decoded to BGR and converted to grey, not read as the decoder's luma plane
  (``allow_luma=False``);
- ``ffmpeg default threads``: the capture opened with FFmpeg's default thread count instead of one
  (``decoder_threads=0``);
- ``default encoder session``: inference through ``backend.encode`` (onnxruntime's default threads, which
  spin while idle) instead of ``backend.stream_encode``.
Printed: each variant's throughput as a fraction of decoding alone, per round and the median.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from sami_rt.hardware.cpuinfo import report_machine


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--frames", type=int, default=1000)
    ap.add_argument("--rounds", type=int, default=6)
    ap.add_argument("--model", default=None)
    args = ap.parse_args(argv)
    report_machine()

    from sami_rt.media.disks import write_disk_video
    from sami_rt.runtime import Runtime
    from sami_rt.video.encode import encode_frames
    from sami_rt.video.frames import decode_alone

    rt = Runtime(args.model, device="cpu")
    spec, stream = rt.bundle.manifest.image, rt.backend.stream_encode

    def variant(encode=stream, **kw):
        return lambda path: encode_frames(encode, spec, path, **kw)

    variants = {
        "decoding alone": decode_alone,
        "decoding alone, luma planes": lambda path: decode_alone(path, luma=True),
        "encode_video (shipped)": rt.encode_video,
        "BGR frames": variant(allow_luma=False),
        "ffmpeg default threads": variant(decoder_threads=0),
        "default encoder session": variant(encode=rt.backend.encode),
    }
    with tempfile.TemporaryDirectory(prefix="sami-rt-bench-video-") as d:
        path = Path(d) / "disk-640x480.mp4"
        write_disk_video(path, args.frames)
        for f in variants.values():  # warm-up: sessions created, file in the page cache
            f(path)
        times: dict[str, list[float]] = {k: [] for k in variants}
        for _ in range(args.rounds):
            for k, f in variants.items():
                t0 = time.perf_counter()
                f(path)
                times[k].append(time.perf_counter() - t0)
    dec = np.array(times["decoding alone"])
    print(f"{args.frames} frames 640x480, {args.rounds} rounds; decoding alone: median "
          f"{1e3 * np.median(dec) / args.frames:.3f} ms/frame")
    print("| variant | ms/frame (median) | fraction of decoding alone, per round | median |\n| --- | --- | --- | --- |")
    for k, t in times.items():
        if k == "decoding alone":
            continue
        r = dec / np.array(t)
        print(f"| {k} | {1e3 * np.median(t) / args.frames:.3f} | {' '.join(f'{100 * x:.0f}%' for x in r)} | "
              f"{100 * np.median(r):.0f}% |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
