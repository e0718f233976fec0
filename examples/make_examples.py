"""Write the example inputs: a guide image and a video of a disk moving along a straight line.

    python examples/make_examples.py [--out examples]

The disks follow the training data's definition (radius 4, intensity 0.5 on a uniform background, 32x32,
anti-aliased edges); the video is upscaled 4x (128x128) so that it is watchable, and the encoder's resize
brings it back. Needs numpy and OpenCV only.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

SIZE, RADIUS, FOREGROUND = 32, 4.0, 0.5


def render(cx: float, cy: float, background: float, size: int = SIZE) -> np.ndarray:
    """One disk as uint8 [size, size] (pixels 0..255); coverage clamp(r + 0.5 - d, 0, 1) per pixel centre."""
    c = np.arange(size) + 0.5
    d = np.sqrt((c[None, :] - cx) ** 2 + (c[:, None] - cy) ** 2)
    cover = np.clip(RADIUS + 0.5 - d, 0.0, 1.0)
    img = background * (1 - cover) + FOREGROUND * cover
    return np.round(img * 255).astype(np.uint8)


def main(argv=None) -> int:
    import cv2

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=Path(__file__).resolve().parent)
    ap.add_argument("--frames", type=int, default=48)
    args = ap.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    guide = render(11.0, 20.0, 0.15)
    cv2.imwrite(str(args.out / "guide.png"), guide)
    cv2.imwrite(str(args.out / "guide_light.png"), render(22.0, 9.0, 0.85))
    # a straight line from (7, 8) to (25, 24) on a fixed background
    t = np.linspace(0.0, 1.0, args.frames)
    xs, ys = 7.0 + 18.0 * t, 8.0 + 16.0 * t
    path = args.out / "moving_disk.mp4"
    tmp = path.with_name(".moving_disk.tmp.mp4")
    w = cv2.VideoWriter(str(tmp), cv2.VideoWriter_fourcc(*"mp4v"), 12.0, (4 * SIZE, 4 * SIZE), isColor=False)
    if not w.isOpened():
        print("error: OpenCV cannot write mp4 (mp4v) video here", file=sys.stderr)
        return 1
    for x, y in zip(xs, ys):
        frame = render(x, y, 0.2)
        w.write(cv2.resize(frame, (4 * SIZE, 4 * SIZE), interpolation=cv2.INTER_NEAREST))
    w.release()
    tmp.replace(path)
    truth = {"frames": args.frames, "x": xs.tolist(), "y": ys.tolist(), "background": 0.2,
             "guide": {"x": 11.0, "y": 20.0, "background": 0.15}, "guide_light": {"x": 22.0, "y": 9.0, "background": 0.85}}
    (args.out / "moving_disk.json").write_text(json.dumps(truth, indent=1) + "\n")
    print(f"wrote {args.out / 'guide.png'}, {args.out / 'guide_light.png'}, {path} ({args.frames} frames)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
