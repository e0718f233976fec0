"""Export a trained SAMI model to a model bundle: ``python export/run.py RUN_DIR_OR_CHECKPOINT -o BUNDLE_DIR``.

The source may also be a bundle: its reference weights are exported again with this version's graphs, its
description, sampling defaults, float16 graphs, evaluation and provenance carried over unless given here
(``python export/run.py sami_rt/models/disks-small -o /tmp/disks-small``).

Writes the encoder, denoiser, guidance and guided_eps ONNX graphs (batch axis dynamic) and manifest.json,
after checking every graph in onnxruntime against the PyTorch model on fresh random inputs (batch 1, 3, 17;
the guidance against torch.autograd.grad). The bundle directory is replaced only when all of it succeeded.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path



def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("source", type=Path, help="run directory of train/run.py, a checkpoint.pt, or a bundle to "
                    "export again from its reference weights")
    ap.add_argument("-o", "--out", type=Path, required=True, help="bundle directory to write")
    ap.add_argument("--opset", type=int, default=18, help="ONNX opset (default 18)")
    ap.add_argument("--ema", action=argparse.BooleanOptionalAction, default=True,
                    help="export the EMA weights (default) or the raw weights")
    ap.add_argument("--no-validate", action="store_true", help="skip the onnxruntime parity check")
    ap.add_argument("--fp16", action="store_true",
                    help="also write float16 graphs (encoder variance and guidance arithmetic kept in float32), "
                         "validated against the float32 graphs")
    ap.add_argument("--tensorrt", action="store_true", help="also build TensorRT engines (needs a CUDA GPU)")
    ap.add_argument("--sampling-steps", type=int, default=None, metavar="N",
                    help="record N as the DDPM steps sampling takes by default (measure it first: python -m "
                         "benchmarks.sampler_steps --model BUNDLE for fewer than 100, or what the model is for, "
                         "e.g. benchmarks/class_keeping.py --steps); without it the runtime takes 100 (a "
                         "bundle: its own)")
    ap.add_argument("--sampling-scale", type=float, default=None, metavar="S",
                    help="record S as the guidance scale sampling takes by default (measure it first, e.g. python -m "
                         "train.disk_checks RUN --scale S --seed 1); without it the run's sampling_scale (a bundle: "
                         "its own)")
    ap.add_argument("--sampling-interval", type=float, nargs=2, default=None, metavar=("LO", "HI"),
                    help="record that the scale applies only at noise levels t / (T - 1) in [LO, HI], 1 elsewhere "
                         "(measure it first: python -m benchmarks.disks_guidance, benchmarks/class_keeping.py "
                         "--interval); without it every level (a bundle: its own)")
    ap.add_argument("--description", default="", help="one line about the model, kept in the manifest and shown "
                    "by `sami-rt info` (e.g. what to use it for; a bundle: its own unless given)")
    args = ap.parse_args(argv)
    from export.core import ExportError, export_bundle
    from train.eval_protocol import Stages

    stages = Stages(log=lambda line: print(line, flush=True))  # a graph's line every 10 s while it takes long
    try:
        print(f"exporting {args.source} -> {args.out}", flush=True)
        export_bundle(args.source, args.out, args.opset, args.ema, not args.no_validate, args.fp16, args.tensorrt,
                      log=stages.log, description=args.description, sampling_steps=args.sampling_steps,
                      sampling_scale=args.sampling_scale, sampling_interval=args.sampling_interval,
                      begin=stages.begin)
    except ExportError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    finally:
        stages.close()
    from sami_rt.contract.bundle import read_bundle

    if read_bundle(args.out, verify=False).manifest.sampling_steps is None:  # the export verified its files
        print("note: no --sampling-steps: the bundle samples 100 DDPM steps by default (record another count with "
              "--sampling-steps N, or later with python export/annotate.py BUNDLE --sampling-steps N)")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
