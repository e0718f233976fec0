"""Checkpoint -> model bundle: export the four graphs, validate them in onnxruntime, write the manifest."""

from __future__ import annotations

import logging
import shutil
import tempfile
import time
import warnings
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from export.graphs import DenoiserGraph, EncoderGraph, GuidanceGraph
from export.source import (carried_defaults, is_bundle, load_bundle_model, load_model,  # load_model re-exported
                           run_provenance)
from sami_rt.contract.bundle import read_bundle, sha256_file, write_manifest
from sami_rt.contract.format import GRAPHS
from sami_rt.contract.manifest import EngineEntry, FileEntry, Manifest, VarianceRange
from sami_rt.errors import ExportError  # re-exported: callers import it from here
from sami_rt.runtime import MAX_SCALE
from train.config import Config
from train.nets import SAMI
from train.objective import guidance, guided_eps

TOLERANCE = 1e-4  # relative error (max |onnx - torch| / max |torch|) allowed at export time
# float16 graphs against the float32 graphs: float16 keeps 11 significant bits (unit roundoff 4.9e-4);
# through the ~20 layers of a UNet (and the encoder's backward for the guidance) the roundoff of the
# activations adds up to a few 1e-3 of the output's range, so 2e-2 leaves room without hiding real errors
# (a wrong graph is off by O(1)).
FP16_TOLERANCE = 2e-2
VALIDATION_BATCHES = (1, 3, 17)
VARIANCE_IMAGES = 256  # held-out images whose posterior variances the manifest's range is taken over


def random_inputs(name: str, B: int, cfg: Config, rng: np.random.Generator) -> dict[str, torch.Tensor]:
    """The contract's example inputs of a graph (``GraphSpec.example_inputs``) as tensors."""
    dims = {"C": cfg.channels, "H": cfg.image_size, "W": cfg.image_size, "D": cfg.latent_dim}
    return {k: torch.from_numpy(v) for k, v in GRAPHS[name].example_inputs(rng, B, dims, cfg.T).items()}


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


def build_graph_module(name: str, model: SAMI, example: torch.Tensor, precision: str = "float32") -> torch.nn.Module:
    """The traced graphs (guided_eps is joined from two of them: _fused_graph)."""
    if name == "encoder":
        return EncoderGraph(model.encoder, precision)
    if name == "denoiser":
        return DenoiserGraph(model.denoiser, precision)
    return GuidanceGraph(model.encoder, example, precision)


def export_onnx(module: torch.nn.Module, name: str, example: dict, path: Path, opset: int) -> None:
    spec = GRAPHS[name]
    batch = torch.export.Dim("batch", min=1, max=65536)
    args = tuple(example[n] for n in spec.input_names)
    module.eval()  # every graph is an inference graph (the exporter warns about a module left in training mode)
    registration = logging.getLogger("torch.onnx._internal.exporter._registration")
    quiet = _DropTorchvisionNotes()
    registration.addFilter(quiet)
    try:
        with warnings.catch_warnings():
            # every input shares the one batch axis on purpose; the exporter notes that it merges the names
            warnings.filterwarnings("ignore", message=r"# The axis name: batch will not be used")
            # torch's own pytree deprecation inside the exporter, not a call of ours
            warnings.filterwarnings("ignore", message=r"`isinstance\(treespec, LeafSpec\)` is deprecated",
                                    category=FutureWarning)
            torch.onnx.export(module, args, str(path), dynamo=True, opset_version=opset, external_data=False,
                              input_names=list(spec.input_names), output_names=list(spec.output_names),
                              dynamic_shapes=tuple({0: batch} for _ in spec.inputs), verbose=False)
    finally:
        registration.removeFilter(quiet)


class _DropTorchvisionNotes:
    """Drops the exporter's 'torchvision is not installed. Skipping torchvision::...' notes: the graphs use no
    torchvision operator, so the missing package changes nothing (4 lines per graph otherwise)."""

    def filter(self, record) -> bool:
        return "torchvision is not installed" not in record.getMessage()


def run_onnx(path: Path, inp: dict) -> list[np.ndarray]:
    import onnxruntime as ort

    from sami_rt.backends.onnxruntime import cpu_session_options

    sess = ort.InferenceSession(str(path), cpu_session_options(ort), providers=["CPUExecutionProvider"])
    return sess.run(None, {k: v.numpy() for k, v in inp.items()})


def relative_error(got: np.ndarray, want: np.ndarray) -> float:
    return float(np.abs(got - want).max() / max(np.abs(want).max(), 1e-12))


def validate_graph(name: str, path: Path, model: SAMI, abar: torch.Tensor, cfg: Config, seed: int,
                   batches=VALIDATION_BATCHES) -> dict[str, float]:
    """Relative error against PyTorch on fresh random inputs at several batch sizes; raises beyond TOLERANCE."""
    rng = np.random.default_rng(seed)
    errors = {}
    for B in batches:
        inp = random_inputs(name, B, cfg, rng)
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
    rng = np.random.default_rng(seed + 1)
    errors = {}
    for B in batches:
        inp = random_inputs(name, B, cfg, rng)
        got, want = run_onnx(path16, inp), run_onnx(path32, inp)
        err = max(relative_error(a, b) for a, b in zip(got, want))
        if not np.isfinite(err) or err > FP16_TOLERANCE:
            raise ExportError(f"graph {name} (float16): relative error {err:.3g} against the float32 graph at "
                              f"batch {B} exceeds {FP16_TOLERANCE:g}")
        errors[str(B)] = err
    return errors


def check_sampling_interval(interval) -> tuple[float, float]:
    """--sampling-interval as the manifest records it (None: every level), or ExportError in one sentence."""
    from sami_rt.sampling.schedule import FULL_INTERVAL, check_interval

    try:
        return FULL_INTERVAL if interval is None else check_interval(interval)
    except ValueError as e:
        raise ExportError(f"--sampling-interval: {e}") from None


def export_bundle(source: str | Path, out: str | Path, opset: int = 18, ema: bool = True, validate: bool = True,
                  fp16: bool = False, tensorrt: bool = False, log: Callable[[str], None] = print,
                  description: str = "", sampling_steps: int | None = None,
                  begin: Callable[[str], None] | None = None, sampling_scale: float | None = None,
                  sampling_interval=None) -> Path:
    """Export a run to a bundle directory ``out``; replaces ``out`` only once everything succeeded. ``log`` gets
    a line per finished graph; ``begin`` (optional) the name of each graph as its work starts. ``sampling_scale``
    replaces the run's own as the bundle's default guidance scale; ``sampling_interval`` (lo, hi) limits it to
    those noise levels (default: every level). ``source`` may also be a bundle (``load_bundle_model``): its
    reference weights are exported again, and its description, sampling defaults, float16 graphs, evaluation,
    training provenance and posterior variance range are carried over unless given here, its export record
    kept as ``export.source.previous``."""
    begin = begin or (lambda what: None)
    if tensorrt:
        from export.tensorrt import TensorRTUnavailable, check_available

        try:
            check_available()  # before any work: say at once when engines cannot be built here
        except TensorRTUnavailable as e:
            raise ExportError(str(e)) from None
    carried = None  # the source bundle's manifest, when exporting again from a bundle
    if is_bundle(source):
        if not ema:
            raise ExportError(f"{source} is a bundle: it holds only the weights it was exported with (--no-ema "
                              "is for a run)")
        model, cfg, abar, carried = load_bundle_model(source)
        description, sampling_steps, sampling_scale, sampling_interval = carried_defaults(
            carried, description, sampling_steps, sampling_scale, sampling_interval)
        fp16 = fp16 or bool(carried.graphs_fp16)  # what the bundle had, it keeps
        if carried.engines and not tensorrt:
            log(f"  note: {source}'s TensorRT engines are not carried over (--tensorrt builds them on a CUDA machine)")
    else:
        model, cfg, abar, ckpt = load_model(source, ema)
    check_sampling_steps(sampling_steps, cfg.T)
    sampling_interval = check_sampling_interval(sampling_interval)
    check_sampling_scale(sampling_scale)
    if sampling_scale is not None:
        cfg = cfg.replace(sampling_scale=float(sampling_scale))
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
        example_x = random_inputs("encoder", 2, cfg, np.random.default_rng(seed))["x"]
        manifest = Manifest(cfg.image_spec(), cfg.latent_dim, abar.numpy().astype(np.float64),
                            {"kind": cfg.schedule, "T": cfg.T, "beta_start": cfg.beta_start, "beta_end": cfg.beta_end},
                            architecture=cfg.architecture())
        graphs: dict[str, dict] = {"graphs": {}, "graphs_fp16": {}}
        validation, validation16 = {}, {}
        precisions = ("float32", "float16") if fp16 else ("float32",)
        for precision in precisions:
            key, suffix = ("graphs", "") if precision == "float32" else ("graphs_fp16", ".fp16")
            for name in GRAPHS:
                label = name if precision == "float32" else f"{name} (float16)"
                begin(f"{label}: export and validation")
                t0 = time.time()
                example = random_inputs(name, 2, cfg, np.random.default_rng(seed))
                path = tmp / f"{name}{suffix}.onnx"
                if external and name in ("denoiser", "guided_eps"):
                    _external_graph(name, model.denoiser, abar, cfg, tmp, path)
                elif name == "guided_eps":
                    _fused_graph(abar, cfg, tmp, suffix, path)
                else:
                    module = build_graph_module(name, model, example_x, precision)
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
                graphs[key][name] = manifest.graph_entry(name, path.name, sha256_file(path), opset, precision)
                log(f"  {label}: {path.stat().st_size / 1e6:.2f} MB in {time.time() - t0:.1f} s{err}")
        engines = {}
        if tensorrt:
            from export.tensorrt import build_engine

            for key, suffix in (("graphs", ""), ("graphs_fp16", ".fp16")):
                for name, g in graphs[key].items():
                    begin(f"{name}{suffix}: TensorRT engine")
                    t0 = time.time()
                    profile = GRAPHS[name].trt_profile
                    entry = build_engine(tmp / g.file, tmp / f"{name}{suffix}.plan", list(g.inputs), profile,
                                         fp16=bool(suffix))
                    engines[f"{name}{suffix}"] = EngineEntry(entry["file"], entry["sha256"], f"{name}{suffix}",
                                                             entry["tensorrt"], entry["gpu"], entry["precision"],
                                                             tuple(profile))
                    log(f"  {name}{suffix}.plan: TensorRT {entry['tensorrt']} on {entry['gpu']}, "
                        f"{time.time() - t0:.1f} s")
        from sami_reference import REFERENCE_FILE, save_reference

        reference = None
        if not external and not cfg.denoiser:  # a plain SAMI model that load_reference can rebuild
            save_reference(model, tmp / REFERENCE_FILE)
            reference = FileEntry(REFERENCE_FILE, sha256_file(tmp / REFERENCE_FILE))
        if carried is not None:
            evaluation, training, vrange = carried.evaluation, carried.training, carried.variance_range
        else:
            (evaluation, training), vrange = run_provenance(ckpt, cfg, ema, log), None
        vrange = vrange or variance_range(lambda x: model.encoder(x)[1], cfg, log)
        record = {"validation": {"tolerance": TOLERANCE, "seed": seed, "relative_error": validation,
                                 "fp16_tolerance": FP16_TOLERANCE, "fp16_relative_error": validation16},
                  "torch": torch.__version__, "onnx_opset": opset,
                  "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
        if carried is not None:  # exported again from a bundle's reference weights: what its own record said
            record["source"] = {"bundle_weights": "reference.npz", "previous": carried.export}
        manifest = manifest.replace(
            graphs=graphs["graphs"], graphs_fp16=graphs["graphs_fp16"], engines=engines, reference=reference,
            # PyTorch's counter cannot see inside an onnxruntime call: no FLOPs for an external denoiser
            flops={} if external else count_flops(model, abar, cfg),
            sampling_scale=float(cfg.sampling_scale), sampling_steps=sampling_steps, description=description,
            sampling_interval=sampling_interval,
            variance_range=vrange,
            training=training, evaluation=evaluation, export=record)
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


def check_sampling_scale(scale: float | None) -> None:
    """A default guidance scale to record (``--sampling-scale``) is above 0 and at most the runtime's MAX_SCALE:
    ExportError before any work."""
    if scale is not None and not 0 < scale <= MAX_SCALE:
        raise ExportError(f"--sampling-scale must be above 0 and at most {MAX_SCALE:g}, got {scale:g}")


def check_sampling_steps(steps: int | None, T: int) -> None:
    """A default DDPM step count to record (``--sampling-steps``) is from 1 to T: ExportError before any work."""
    if steps is not None and not 1 <= steps <= T:
        raise ExportError(f"--sampling-steps must be from 1 to the model's T={T}, got {steps}")


def variance_range(encode_var: Callable[[torch.Tensor], object], cfg: Config,
                   log: Callable[[str], None] = print) -> VarianceRange | None:
    """The range of the encoder's mean log posterior variance over VARIANCE_IMAGES held-out images of the
    run's data (train/data.py ``eval_set``), which the runtime compares a guide's with; None, and a line
    saying why, where those images cannot be read here. ``encode_var`` maps a batch of model inputs
    [B, C, H, W] (float32 tensor) to their posterior variances [B, D] (a tensor or an array): the PyTorch
    encoder at export, a bundle's ONNX encoder in ``export/annotate.py``."""
    from sami_rt.errors import SamiError
    from train.data import eval_set

    try:
        x, _ = eval_set(cfg, VARIANCE_IMAGES)
    except (SamiError, OSError, ValueError) as e:  # missing or damaged data: the bundle goes out without a range
        log(f"  posterior variance range: not recorded ({e})")
        return None
    with torch.no_grad():
        var = np.concatenate([np.asarray(encode_var(x[i : i + 64].float()), dtype=np.float64)
                              for i in range(0, len(x), 64)])
    r = VarianceRange.of(var)
    log(f"  posterior variance range: mean log variance {r.low:.2f} .. {r.high:.2f} (1% .. 99% of {r.images} "
        "held-out images)")
    return r


def _fused_graph(abar: torch.Tensor, cfg: Config, tmp: Path, suffix: str, path: Path) -> None:
    """guided_eps joined from the denoiser and guidance graphs just exported (export/compose.py), rather than
    traced again: tracing it repeated both traces (the half-UNet family: 58 s against 16 s + 34 s). The
    result is validated against PyTorch like any traced graph."""
    import onnx

    from export.compose import compose_guided_eps

    m = compose_guided_eps(onnx.load(str(tmp / f"denoiser{suffix}.onnx")), onnx.load(str(tmp / f"guidance{suffix}.onnx")),
                           abar.numpy(), cfg.channels, cfg.image_size, cfg.image_size, cfg.latent_dim)
    onnx.save(m, str(path))


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

    rng = np.random.default_rng(0)
    out = {}
    for name in GRAPHS:
        inp = random_inputs(name, 1, cfg, rng)
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
