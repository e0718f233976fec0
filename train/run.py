"""Train a SAMI model: ``python train/run.py --config NAME [--key value ...] [--out RUN_DIR]``.

Every field of train/config.py's Config can be overridden (``--kl-weight 1e-3``, ``--unet-mult 1,2,2``).
``--resume RUN_DIR`` continues a run exactly where its last checkpoint left it (overrides such as
``--steps`` still apply). Several processes: ``torchrun --nproc_per_node N train/run.py ...``.
``--denoiser SOURCE [--denoiser-param eps|x0|v]`` trains only the encoder on a frozen, pretrained denoiser
(a run directory or checkpoint of this project, a diffusers UNet2DModel directory, or an .onnx file; see
train/frozen.py), whose schedule and image shape the run takes.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path


from train.config import PRESETS, Config, apply_overrides, field_help, get_config


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="configuration fields (each overridable as --field-name VALUE; tuples as 1,2,2; shown with the base "
        "defaults, which a preset changes: --print-config shows one resolved):\n" + field_help())
    ap.add_argument("--config", choices=sorted(PRESETS), help="named configuration (required unless --resume)")
    ap.add_argument("--out", type=Path, help="run directory (default runs/CONFIG-TIMESTAMP)")
    ap.add_argument("--resume", type=Path, metavar="RUN_DIR", help="continue the run in RUN_DIR")
    ap.add_argument("--no-eval", action="store_true", help="skip the evaluation at the end")
    ap.add_argument("--print-config", action="store_true", help="print the resolved configuration and exit")
    args, rest = ap.parse_known_args(argv)
    try:
        if args.resume:
            cfg_file = args.resume / "config.json"
            if not cfg_file.is_file():
                ap.error(f"{cfg_file} not found: --resume needs a run directory written by train/run.py")
            cfg = apply_overrides(Config.from_dict(json.loads(cfg_file.read_text())), rest)
            run_dir = args.resume
        else:
            if not args.config:
                ap.error("--config NAME is required (or --resume RUN_DIR)")
            cfg = get_config(args.config, rest)
            run_dir = args.out or Path("runs") / f"{args.config}-{time.strftime('%Y%m%d-%H%M%S')}"
    except ValueError as e:
        ap.error(str(e))
    from train.baselines import MODELS

    if cfg.model not in MODELS:
        ap.error(f"--model expects one of {', '.join(MODELS)}, got {cfg.model!r}")
    from train.eval_protocol import PROTOCOLS

    if cfg.eval_protocol not in PROTOCOLS:
        ap.error(f"--eval-protocol expects quick or full, got {cfg.eval_protocol!r}")
    from train.contrast import INPUTS

    if cfg.aux_contrast_input not in INPUTS:
        ap.error(f"--aux-contrast-input expects one of {', '.join(INPUTS)}, got {cfg.aux_contrast_input!r}")
    if cfg.aux_contrast < 0:
        ap.error(f"--aux-contrast must be 0 (off) or positive, got {cfg.aux_contrast}")
    if cfg.eval_steps < 1:
        ap.error(f"--eval-steps must be at least 1, got {cfg.eval_steps}")
    if cfg.model != "sami" and cfg.denoiser:
        ap.error(f"--denoiser is for SAMI; a {cfg.model} has no diffusion decoder")
    if args.print_config:
        print(cfg.to_json())
        return 0

    from sami_rt.errors import SamiError
    from train.frozen import FrozenDenoiserError
    from train.loop import Trainer

    try:
        trainer = Trainer(cfg, run_dir, resume=bool(args.resume))
    except (FrozenDenoiserError, SamiError) as e:  # missing or unreadable data: one line, not a traceback
        print(f"error: {e}", file=sys.stderr)
        return 1
    if trainer.dist.main:
        print(f"run directory: {run_dir}", file=sys.stderr)
        print(describe_data(trainer.cfg, trainer.data), file=sys.stderr)
        if cfg.denoiser:  # what the run took from the frozen denoiser (its schedule, its image shape)
            print(trainer.model.denoiser.summary, file=sys.stderr)
    try:  # an image read lazily during training, the evaluation's data: the same one line
        trainer.run()
        trainer.dist.close()
        if trainer.step >= cfg.steps and trainer.dist.main and cfg.eval_at_end and not args.no_eval:
            from train.evaluate import evaluate_run

            res = evaluate_run(run_dir, protocol=cfg.eval_protocol)
            print(json.dumps(res.get("summary", {}), indent=2))
    except SamiError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0


def describe_data(cfg: Config, data) -> str:
    """What the run trains on, in one line (a folder: how many images were found)."""
    n = len(data)
    if cfg.dataset == "folder":
        return f"data: {n} images found under {cfg.data_path}"
    if cfg.dataset == "celeba":
        return f"data: {n} CelebA training images under {cfg.data_path}"
    if not n:
        return f"data: {cfg.dataset}, drawn afresh at every step"
    return f"data: {cfg.dataset}, {n} training images" + (f" from {cfg.data_path}" if cfg.data_path else "")


def _exit(code: int) -> None:
    """Exit with ``code``. A rank of a several-process run (``torchrun``) leaves without the interpreter's
    teardown, its work done and its process group destroyed: under load a rank sometimes aborted there
    (SIGABRT, "terminate called without an active exception": by its message a C++ thread still joinable at
    finalisation, likely the gloo process group's), which torchrun reports as a failed run although every
    file was written."""
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    sys.exit(code)


if __name__ == "__main__":
    _exit(main())
