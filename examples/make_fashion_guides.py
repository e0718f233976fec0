"""Write Fashion-MNIST guide images for the shipped ``fashion-mnist`` model: one per class from the test split.

    python examples/make_fashion_guides.py [--out examples/fashion] [--start 9000] [--per-class 1]

For each class, the first ``--per-class`` test images at index ``--start`` or later, as 28x28 PNGs named
``CLASS-NAME[-K].png`` (the runtime frames them to 32x32 as training did), and ``guides.json`` with each file's
test index and class. The default start, 9000, keeps them apart from every test image the project's own
figures and choices used (the evaluation's guides are test images 0-15, its held-out sets the first 2,000).
Needs the Debian package dataset-fashion-mnist (or ``--data-path DIR`` with its files) and the training
extra (torch), which reads it.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

import numpy as np


def main(argv=None) -> int:
    import cv2

    from train.data import load_fashion_mnist
    from train.labelled import FASHION_CLASSES

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "fashion")
    ap.add_argument("--start", type=int, default=9000, help="the first test index considered (default 9000)")
    ap.add_argument("--per-class", type=int, default=1, help="images per class (default 1)")
    ap.add_argument("--data-path", default="", help="folder of the Fashion-MNIST files (default: the Debian package)")
    args = ap.parse_args(argv)
    x, y = load_fashion_mnist(args.data_path, "test", 28)
    pixels = np.rint((x.numpy()[:, 0] + 1.0) * 127.5).astype(np.uint8)  # the files' own bytes again
    labels = y.numpy()
    args.out.mkdir(parents=True, exist_ok=True)
    index = []
    for c, name in enumerate(FASHION_CLASSES):
        picks = [int(i) for i in np.flatnonzero(labels[args.start:] == c)[: args.per_class] + args.start]
        if len(picks) < args.per_class:
            print(f"error: only {len(picks)} test images of class {name} from index {args.start}", file=sys.stderr)
            return 1
        slug = f"{c}-" + re.sub(r"[^a-z]+", "-", name.lower()).strip("-")
        for k, i in enumerate(picks):
            f = args.out / (slug + (f"-{k}" if args.per_class > 1 else "") + ".png")
            if not cv2.imwrite(str(f), pixels[i]):
                print(f"error: cannot write {f}", file=sys.stderr)
                return 1
            index.append({"file": f.name, "test_index": i, "class": c, "name": name})
    (args.out / "guides.json").write_text(json.dumps(index, indent=1) + "\n")
    print(f"wrote {len(index)} guides to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
