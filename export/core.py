"""Checkpoint -> model bundle: export the four graphs, validate them in onnxruntime, write the manifest."""

from __future__ import annotations

import json
import shutil
import tempfile
import time
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from export.graphs import DenoiserGraph, EncoderGraph, GuidanceGraph, GuidedEpsGraph
from sami_rt.bundle import GRAPH_IO, io_spec, new_manifest, read_bundle, sha256_file, write_manifest
from train.config import Config
from train.nets import SAMI
from train.objective import guidance, guided_eps

GRAPHS = tuple(GRAPH_IO)
TOLERANCE = 1e-4  # relative error (max |onnx - torch| / max |torch|) allowed at export time
# float16 graphs against the float32 graphs: float16 keeps 11 significant bits (unit roundoff 4.9e-4);
# through the ~20 layers of a UNet (and the encoder's backward for the guidance) the roundoff of the
# activations adds up to a few 1e-3 of the output's range, so 2e-2 leaves room without hiding real errors
# (a wrong graph is off by O(1)).
FP16_TOLERANCE = 2e-2
VALIDATION_BATCHES = (1, 3, 17)


class ExportError(RuntimeError):
    """An export that failed, naming the graph and the reason."""


def load_model(source: str | Path, ema: bool = True):
    """(model, config, abar, checkpoint path) from a run directory or a checkpoint file."""
    from train.loop import checkpoint_path, load_run

    path = checkpoint_path(source)
    if not path.is_file():
        raise ExportError(f"no checkpoint at {path} (pass a run directory of train/run.py or its checkpoint.pt)")
    model, cfg, abar, _ = load_run(path, ema)
    if cfg.denoiser:  # trained on a frozen denoiser
        from train.frozen import FrozenDenoiser

        d = model.denoiser
        if isinstance(d, FrozenDenoiser) and d.kind == "torch":
            model.denoiser = d.net  # this project's UNet: exported like any other
        # an ONNX denoiser is wrapped and fused as ONNX (export/compose.py); a diffusers one is traced
    return model, cfg, abar, path


def random_inputs(name: str, B: int, cfg: Config, g: torch.Generator) -> dict[str, torch.Tensor]:
    C, S, D = cfg.channels, cfg.image_size, cfg.latent_dim
    x = torch.rand(B, C, S, S, generator=g) * 2 - 1 if name == "encoder" else torch.randn(B, C, S, S, generator=g)
    full = {"x": x, "x_t": x, "t": torch.randint(cfg.T, (B,), generator=g),
            "z": torch.randn(B, D, generator=g), "mask": (torch.rand(B, D, generator=g) > 0.3).float(),
            "scale": torch.rand(B, generator=g) * 1.5 + 0.5}
    return {n: full[n] for n, _ in GRAPH_IO[name][0]}


def reference(name: str, model: SAMI, abar: torch.Tensor, inp: dict) -> list[torch.Tensor]:
    """The PyTorch twin of each graph (autograd for the guidance)."""
    if name == "encoder":
        return list(model.encoder(inp["x"]))
    if name == "denoiser":
        return [model.denoiser(inp["x_t"], inp["t"])]
    if name == "guidance":
        return [guidance(model.encoder, inp["x_t"], inp["z"], inp["mask"])]
    s1m = torch.sqrt(1 - abar[inp["t"]]).float()
    return [guided_eps(model.denoiser, model.encoder, inp["x_t"], inp["t"], inp["z"], s1m, inp["scale"], inp["mask"])]


def build_graph_module(name: str, model: SAMI, abar: torch.Tensor, example: torch.Tensor, cache: dict,
                       precision: str = "float32") -> torch.nn.Module:
    if name == "encoder":
        return EncoderGraph(model.encoder, precision)
    if name == "denoiser":
        return DenoiserGraph(model.denoiser, precision)
    key = ("guidance", precision)
    if key not in cache:
        cache[key] = GuidanceGraph(model.encoder, example, precision)
    if name == "guidance":
        return cache[key]
    return GuidedEpsGraph(model.denoiser, cache[key], abar, precision)


def export_onnx(module: torch.nn.Module, name: str, example: dict, path: Path, opset: int) -> None:
    ins, outs = GRAPH_IO[name]
    batch = torch.export.Dim("batch", min=1, max=65536)
    args = tuple(example[n] for n, _ in ins)
    torch.onnx.export(module, args, str(path), dynamo=True, opset_version=opset, external_data=False,
                      input_names=[n for n, _ in ins], output_names=[n for n, _ in outs],
                      dynamic_shapes=tuple({0: batch} for _ in ins), verbose=False)


def run_onnx(path: Path, inp: dict) -> list[np.ndarray]:
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.log_severity_level = 3
    sess = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
    return sess.run(None, {k: v.numpy() for k, v in inp.items()})


def relative_error(got: np.ndarray, want: np.ndarray) -> float:
    return float(np.abs(got - want).max() / max(np.abs(want).max(), 1e-12))


def validate_graph(name: str, path: Path, model: SAMI, abar: torch.Tensor, cfg: Config, seed: int,
                   batches=VALIDATION_BATCHES) -> dict[str, float]:
    """Relative error against PyTorch on fresh random inputs at several batch sizes; raises beyond TOLERANCE."""
    g = torch.Generator().manual_seed(seed)
    errors = {}
    for B in batches:
        inp = random_inputs(name, B, cfg, g)
        want = reference(name, model, abar, inp)
        got = run_onnx(path, inp)
        if len(got) != len(want) or any(a.shape != tuple(b.shape) for a, b in zip(got, want)):
            raise ExportError(f"graph {name}: onnxruntime returned shapes {[a.shape for a in got]}, "
                              f"PyTorch {[tuple(b.shape) for b in want]} at batch {B}")
        err = max(relative_error(a, b.detach().numpy()) for a, b in zip(got, want))
        if not np.isfinite(err) or err > TOLERANCE:
            raise ExportError(f"graph {name}: relative error {err:.3g} against PyTorch at batch {B} "
                              f"exceeds {TOLERANCE:g}")
        errors[str(B)] = err
    return errors


def validate_fp16(name: str, path16: Path, path32: Path, cfg: Config, seed: int,
                  batches=VALIDATION_BATCHES) -> dict[str, float]:
    """Relative error of a float16 graph against the float32 graph on the same fresh random inputs."""
    g = torch.Generator().manual_seed(seed + 1)
    errors = {}
    for B in batches:
        inp = random_inputs(name, B, cfg, g)
        got, want = run_onnx(path16, inp), run_onnx(path32, inp)
        err = max(relative_error(a, b) for a, b in zip(got, want))
        if not np.isfinite(err) or err > FP16_TOLERANCE:
            raise ExportError(f"graph {name} (float16): relative error {err:.3g} against the float32 graph at "
                              f"batch {B} exceeds {FP16_TOLERANCE:g}")
        errors[str(B)] = err
    return errors


def export_bundle(source: str | Path, out: str | Path, opset: int = 18, ema: bool = True, validate: bool = True,
                  fp16: bool = False, tensorrt: bool = False, log: Callable[[str], None] = print,
                  description: str = "") -> Path:
    """Export a run to a bundle directory ``out``; replaces ``out`` only once everything succeeded."""
    if tensorrt:
        from export.tensorrt import TensorRTUnavailable, check_available

        try:
            check_available()  # before any work: say at once when engines cannot be built here
        except TensorRTUnavailable as e:
            raise ExportError(str(e)) from None
    model, cfg, abar, ckpt = load_model(source, ema)
    if cfg.model != "sami":
        raise ExportError(f"{source} is a {cfg.model} baseline: only SAMI models (a diffusion decoder guided by the "
                          "encoder) export to a bundle")
    external = getattr(model.denoiser, "kind", None) == "onnx"  # a frozen ONNX denoiser: wrapped, not traced
    if external and fp16:
        raise ExportError("--fp16 is not available for a model on an external ONNX denoiser (its graph is "
                          "copied as it is)")
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent))
    try:
        seed = int.from_bytes(np.random.default_rng().bytes(4), "little")
        example_x = torch.rand(2, cfg.channels, cfg.image_size, cfg.image_size) * 2 - 1
        manifest = new_manifest(cfg.channels, cfg.image_size, cfg.image_size, cfg.latent_dim, abar.numpy(),
                                {"kind": cfg.schedule, "T": cfg.T, "beta_start": cfg.beta_start,
                                 "beta_end": cfg.beta_end})
        cache: dict = {}
        validation, validation16 = {}, {}
        precisions = ("float32", "float16") if fp16 else ("float32",)
        for precision in precisions:
            key, suffix = ("graphs", "") if precision == "float32" else ("graphs_fp16", ".fp16")
            manifest[key] = {}
            for name in GRAPHS:
                label = name if precision == "float32" else f"{name} (float16)"
                t0 = time.time()
                example = random_inputs(name, 2, cfg, torch.Generator().manual_seed(seed))
                path = tmp / f"{name}{suffix}.onnx"
                if external and name in ("denoiser", "guided_eps"):
                    _external_graph(name, model.denoiser, abar, cfg, tmp, path)
                else:
                    module = build_graph_module(name, model, abar, example_x, cache, precision)
                    try:
                        export_onnx(module, name, example, path, opset)
                    except Exception as e:  # the exporter's errors are long: keep the graph and the first line
                        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
                        raise ExportError(f"graph {label}: ONNX export failed: {first}") from e
                err = ""
                if validate and precision == "float32":
                    validation[name] = validate_graph(name, path, model, abar, cfg, seed)
                    err = f", max relative error {max(validation[name].values()):.2g}"
                elif validate:
                    validation16[name] = validate_fp16(name, path, tmp / f"{name}.onnx", cfg, seed)
                    err = f", max relative error to float32 {max(validation16[name].values()):.2g}"
                manifest[key][name] = {"file": path.name, **io_spec(name, cfg.channels, cfg.image_size,
                                       cfg.image_size, cfg.latent_dim), "opset": opset, "precision": precision,
                                       "sha256": sha256_file(path)}
                log(f"  {label}: {path.stat().st_size / 1e6:.2f} MB in {time.time() - t0:.1f} s{err}")
        if tensorrt:
            from export.tensorrt import build_engine

            for key, suffix in (("graphs", ""), ("graphs_fp16", ".fp16")):
                for name, g in manifest.get(key, {}).items():
                    t0 = time.time()
                    entry = build_engine(tmp / g["file"], tmp / f"{name}{suffix}.plan", g["inputs"],
                                         fp16=bool(suffix))
                    manifest["engines"][f"{name}{suffix}"] = entry
                    log(f"  {name}{suffix}.plan: TensorRT {entry['tensorrt']} on {entry['gpu']}, "
                        f"{time.time() - t0:.1f} s")
        from sami_reference import REFERENCE_FILE, save_reference

        if not external and not cfg.denoiser:  # a plain SAMI model that load_reference can rebuild
            save_reference(model, tmp / REFERENCE_FILE)
            manifest["reference"] = {"file": REFERENCE_FILE, "sha256": sha256_file(tmp / REFERENCE_FILE),
                                     "content": "float32 state dict of the exported weights (npz, no pickle), "
                                                "for the PyTorch baseline of `sami-rt bench`"}
        if not external:  # PyTorch's counter cannot see inside an onnxruntime call
            manifest["flops"] = count_flops(model, abar, cfg)
        run_dir = ckpt.parent
        ev = run_dir / "eval.json"
        manifest["training"] = {"config": cfg.to_dict(), "checkpoint": ckpt.name, "weights": "ema" if ema else "raw"}
        manifest["sampling"] = {"scale": float(cfg.sampling_scale)}
        if description:
            manifest["description"] = description
        manifest["evaluation"] = json.loads(ev.read_text()).get("summary", {}) if ev.is_file() else {}
        manifest["export"] = {"validation": {"tolerance": TOLERANCE, "seed": seed, "relative_error": validation,
                                             "fp16_tolerance": FP16_TOLERANCE, "fp16_relative_error": validation16},
                              "torch": torch.__version__, "onnx_opset": opset,
                              "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
        write_manifest(tmp, manifest)
        read_bundle(tmp)  # the reader accepts what the writer wrote
        tmp.chmod(0o755)
        for f in tmp.iterdir():
            f.chmod(0o644)
        _replace_dir(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


def _external_graph(name: str, frozen, abar: torch.Tensor, cfg: Config, tmp: Path, path: Path) -> None:
    """The denoiser and guided_eps graphs of a model on a frozen ONNX denoiser, built as ONNX."""
    import onnx

    from export.compose import compose_guided_eps, wrap_denoiser

    C, S, D = cfg.channels, cfg.image_size, cfg.latent_dim
    try:
        if name == "denoiser":
            m = wrap_denoiser(frozen.source, frozen.param, abar.numpy(), C, S, S)
        else:
            m = compose_guided_eps(onnx.load(str(tmp / "denoiser.onnx")), onnx.load(str(tmp / "guidance.onnx")),
                                   abar.numpy(), C, S, S, D)
    except Exception as e:
        raise ExportError(f"graph {name}: building it around {frozen.source} failed: {str(e).splitlines()[0]}") from e
    onnx.save(m, str(path))


def count_flops(model, abar: torch.Tensor, cfg: Config) -> dict[str, int]:
    """FLOPs per sample of each graph's computation (PyTorch's counter: 2 per multiply-add of convolutions
    and matrix products, the backward ones of the guidance included), at batch 1."""
    from torch.utils.flop_counter import FlopCounterMode

    g = torch.Generator().manual_seed(0)
    out = {}
    for name in GRAPHS:
        inp = random_inputs(name, 1, cfg, g)
        if "x_t" in inp and name != "denoiser":  # a non-leaf input: the counter's module hooks reject a leaf
            inp["x_t"] = inp["x_t"].requires_grad_(True) * 1.0
        with FlopCounterMode(display=False) as fc:
            reference(name, model, abar, inp)
        out[name] = int(fc.get_total_flops())
    return out


def _replace_dir(new: Path, dest: Path) -> None:
    """Move ``new`` to ``dest``; an existing ``dest`` is removed only after the new one is in place."""
    if dest.exists():
        old = dest.with_name(f".{dest.name}.old")
        shutil.rmtree(old, ignore_errors=True)
        dest.rename(old)
        new.rename(dest)
        shutil.rmtree(old, ignore_errors=True)
    else:
        new.rename(dest)
