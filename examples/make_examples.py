"""Write the example inputs: a guide image and a video of a disk moving along a straight line.

    python examples/make_examples.py [--out examples] [--model BUNDLE]

The disks follow the definition the model was trained on (size, radius, disk intensity and background range,
read from the bundle's manifest; default: the model shipped in the package), with anti-aliased edges; the
video is upscaled 4x so that it is watchable, and the encoder's resize brings it back. Needs numpy, OpenCV
and sami_rt only.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from sami_rt.contract.bundle import DEFAULT_MODEL, read_bundle
from sami_rt.errors import VideoError
from sami_rt.media.images import write_video

ROOT = Path(__file__).resolve().parent.parent


def disk_definition(bundle: Path) -> dict:
    """size, radius, foreground and background range of the disks a bundle's model was trained on."""
    cfg = read_bundle(bundle, verify=False).manifest.training["config"]
    return {"size": cfg["image_size"], "radius": cfg["disk_radius"], "foreground": cfg["disk_foreground"],
            "bg": (cfg.get("disk_bg_min", 0.0), cfg.get("disk_bg_max", 1.0))}


def render(cx: float, cy: float, background: float, d: dict) -> np.ndarray:
    """One disk as uint8 [size, size] (pixels 0..255), drawn as the training data draws it
    (``sami_rt.media.disks.render_disks``)."""
    from sami_rt.media.disks import render_disks, to_pixels

    return to_pixels(render_disks([(cx, cy, background)], d["size"], d["radius"], d["foreground"])[0])


def main(argv=None) -> int:
    import cv2

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=Path(__file__).resolve().parent)
    ap.add_argument("--frames", type=int, default=48)
    ap.add_argument("--model", type=Path, default=DEFAULT_MODEL, help="bundle whose training data to follow")
    args = ap.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    d = disk_definition(args.model)
    lo, hi = d["bg"]
    size = d["size"]
    # guides at 25% and 85% of the background range; the video's background at 35%
    bg_dark, bg_light, bg_video = lo + 0.25 * (hi - lo), lo + 0.85 * (hi - lo), lo + 0.35 * (hi - lo)
    guide = render(11.0, 20.0, bg_dark, d)
    cv2.imwrite(str(args.out / "guide.png"), guide)
    cv2.imwrite(str(args.out / "guide_light.png"), render(22.0, 9.0, bg_light, d))
    # a straight line from (7, 8) to (25, 24) on a fixed background
    t = np.linspace(0.0, 1.0, args.frames)
    xs, ys = 7.0 + 18.0 * t, 8.0 + 16.0 * t
    path = args.out / "moving_disk.mp4"
    try:
        write_video(path, (cv2.resize(render(x, y, bg_video, d), (4 * size, 4 * size), interpolation=cv2.INTER_NEAREST)
                           for x, y in zip(xs, ys)), fps=12.0)
    except VideoError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    truth = {"frames": args.frames, "x": xs.tolist(), "y": ys.tolist(), "background": bg_video, "disks": d,
             "guide": {"x": 11.0, "y": 20.0, "background": bg_dark},
             "guide_light": {"x": 22.0, "y": 9.0, "background": bg_light}}
    (args.out / "moving_disk.json").write_text(json.dumps(truth, indent=1) + "\n")
    print(f"wrote {args.out / 'guide.png'}, {args.out / 'guide_light.png'}, {path} ({args.frames} frames)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
