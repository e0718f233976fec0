"""``manifest.json`` typed, written and read in one place: :class:`Manifest` writes itself
(:meth:`Manifest.to_json`) and reads itself (:meth:`Manifest.from_json`, :meth:`Manifest.loads`: the JSON
validated into these types, every problem a :class:`BundleError` naming the file and the field). No other
code assembles or parses a manifest; ``sami_rt.contract.bundle`` finds the files it names.

Format version 2; version 1 (bundles exported before the contract was typed) still reads, its missing
records derived from the training configuration it kept (``preprocess_for``, ``Architecture.from_config``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from sami_rt._version import __version__
from sami_rt.contract.format import (FORMAT, FORMAT_VERSION, GRAPHS, PARAMETERISATIONS, READABLE_VERSIONS, TRT_PROFILE,
                                     Architecture, ImageSpec, Preprocess, is_finite_number, preprocess_for)
from sami_rt.errors import BundleError
from sami_rt.sampling.schedule import FULL_INTERVAL, check_interval


@dataclass(frozen=True)
class FileEntry:
    """A file the manifest names (relative to the bundle) and its sha256 ('' where not recorded)."""

    file: str
    sha256: str


@dataclass(frozen=True)
class GraphEntry(FileEntry):
    name: str = ""
    inputs: tuple = ()
    outputs: tuple = ()
    opset: int = 0
    precision: str = "float32"


@dataclass(frozen=True)
class EngineEntry(FileEntry):
    """A TensorRT plan: usable only with the same TensorRT version on the same GPU model."""

    name: str = ""
    tensorrt: str = ""
    gpu: str = ""
    precision: str = "float32"
    batch_profile: tuple[int, int, int] = TRT_PROFILE


# A guide whose statistic lies this far (in log variance: a factor e in variance) beyond the recorded range is
# called unlike the training images; within it, the guide is taken as one of them.
GUIDE_VARIANCE_MARGIN = 1.0


def mean_log_variance(var) -> np.ndarray:
    """Per image, the mean over latent axes of log var (posterior variances [N, D] -> [N], float64): the
    statistic whose range the export records on training-distribution images and a guide is compared with."""
    return np.log(np.maximum(np.asarray(var, dtype=np.float64), 1e-300)).mean(axis=-1)


@dataclass(frozen=True)
class VarianceRange:
    """The range of :func:`mean_log_variance` that the encoder gave training-distribution images: its
    ``quantiles`` (1% and 99%) over ``images`` held-out images of the run's data, recorded at export."""

    low: float
    high: float
    quantiles: tuple[float, float] = (0.01, 0.99)
    images: int = 0

    @classmethod
    def of(cls, var, quantiles: tuple[float, float] = (0.01, 0.99)) -> "VarianceRange":
        s = mean_log_variance(var)
        lo, hi = np.quantile(s, quantiles)
        return cls(float(lo), float(hi), (float(quantiles[0]), float(quantiles[1])), len(s))

    def far_outside(self, var) -> float | None:
        """The statistic of one image's variances [D] (or [1, D]) where it lies more than
        GUIDE_VARIANCE_MARGIN beyond [low, high]; None where it does not."""
        s = float(mean_log_variance(np.reshape(var, -1)))
        return s if not self.low - GUIDE_VARIANCE_MARGIN <= s <= self.high + GUIDE_VARIANCE_MARGIN else None

    def to_json(self) -> dict:
        return {"statistic": "mean over the latent axes of log var", "quantiles": list(self.quantiles),
                "range": [self.low, self.high], "images": self.images}


@dataclass(frozen=True)
class Manifest:
    image: ImageSpec
    latent_dim: int
    abar: np.ndarray  # float64, decreasing, in (0, 1): the schedule as data
    schedule: dict  # its description (kind, T, betas ...) besides abar
    parameterisation: str = "eps"
    architecture: Architecture | None = None
    graphs: dict[str, GraphEntry] = field(default_factory=dict)
    graphs_fp16: dict[str, GraphEntry] = field(default_factory=dict)
    engines: dict[str, EngineEntry] = field(default_factory=dict)
    reference: FileEntry | None = None  # the reference model's weights (npz, no pickle)
    flops: dict[str, int] = field(default_factory=dict)  # per sample, per graph
    sampling_scale: float = 1.0  # the guidance scale sampling uses unless told otherwise (1: the exact model)
    training: dict = field(default_factory=dict)  # provenance: the run's configuration, checkpoint, weights
    evaluation: dict = field(default_factory=dict)  # the run's evaluation summary
    description: str = ""
    export: dict = field(default_factory=dict)  # provenance: validation errors, versions, time
    format_version: int = FORMAT_VERSION
    sami_rt_version: str = ""
    variance_range: VarianceRange | None = None  # the posterior variances training-distribution images gave
    sampling_steps: int | None = None  # DDPM steps sampling takes unless told otherwise (None: the runtime's 100)
    sampling_interval: tuple = FULL_INTERVAL  # the noise levels (fractions of T - 1) the scale applies at; 1 elsewhere

    @property
    def T(self) -> int:
        return len(self.abar)

    @property
    def dims(self) -> dict[str, int]:
        return {"C": self.image.channels, "H": self.image.height, "W": self.image.width, "D": self.latent_dim}

    @property
    def code_spread(self) -> np.ndarray | None:
        """Per-axis standard deviation of held-out posterior means, where the evaluation recorded it."""
        ms = self.evaluation.get("mean_std")
        if not isinstance(ms, list) or len(ms) != self.latent_dim:
            return None
        try:
            s = np.asarray(ms, dtype=np.float64)
        except (TypeError, ValueError):
            return None
        return s if np.all(np.isfinite(s)) and np.all(s > 0) else None

    def graph_entry(self, name: str, file: str, sha256: str, opset: int, precision: str) -> GraphEntry:
        io = GRAPHS[name].io(self.dims)
        return GraphEntry(file, sha256, name, tuple(io["inputs"]), tuple(io["outputs"]), opset, precision)

    def replace(self, **kw) -> "Manifest":
        return replace(self, **kw)

    # ---------------------------------------------------------------------------------- writing
    def to_json(self) -> dict:
        def graphs(gs):
            return {n: {"file": g.file, "inputs": list(g.inputs), "outputs": list(g.outputs), "opset": g.opset,
                        "precision": g.precision, "sha256": g.sha256} for n, g in gs.items()}

        m: dict[str, Any] = {
            "format": FORMAT, "format_version": FORMAT_VERSION, "sami_rt_version": __version__,
            "image": self.image.to_json(), "latent_dim": self.latent_dim,
            "schedule": {**self.schedule, "abar": [float(a) for a in self.abar]},
            "parameterisation": self.parameterisation,
            "graphs": graphs(self.graphs), "engines": {
                n: {"file": e.file, "tensorrt": e.tensorrt, "gpu": e.gpu, "precision": e.precision,
                    "batch_profile": list(e.batch_profile), "sha256": e.sha256} for n, e in self.engines.items()},
        }
        if self.graphs_fp16:
            m["graphs_fp16"] = graphs(self.graphs_fp16)
        if self.architecture is not None:
            m["architecture"] = self.architecture.to_json()
        if self.reference is not None:
            m["reference"] = {"file": self.reference.file, "sha256": self.reference.sha256,
                              "content": "float32 state dict of the exported weights (npz, no pickle), for the "
                                         "reference model"}
        if self.flops:
            m["flops"] = dict(self.flops)
        m["sampling"] = {"scale": float(self.sampling_scale)}
        if self.sampling_steps is not None:
            m["sampling"]["steps"] = int(self.sampling_steps)
        if tuple(self.sampling_interval) != FULL_INTERVAL:
            m["sampling"]["interval"] = [float(v) for v in self.sampling_interval]
        if self.variance_range is not None:
            m["posterior_variance"] = self.variance_range.to_json()
        for key in ("training", "evaluation", "export"):
            m[key] = getattr(self, key)
        if self.description:
            m["description"] = self.description
        return m

    def dumps(self) -> str:
        return json.dumps(self.to_json(), indent=1) + "\n"

    # ---------------------------------------------------------------------------------- reading
    @classmethod
    def from_json(cls, obj, where: str) -> "Manifest":
        """Validate and type a parsed manifest; ``where`` (the file) starts every error's sentence."""
        return parse_manifest(obj, where)

    @classmethod
    def loads(cls, text: str, where: str) -> "Manifest":
        return loads_manifest(text, where)


def loads_manifest(text: str, where: str) -> "Manifest":
    try:
        m = json.loads(text)
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise BundleError(f"{where} is not valid JSON ({e})") from None
    return parse_manifest(m, where)


def parse_manifest(m, where: str) -> "Manifest":
    """Validate and type a manifest (refusing with a BundleError that names ``where`` and the problem).
    Version 1 lacks ``architecture`` and ``image.preprocess``: both are derived from ``training.config``
    (the data set decides the preprocessing), or left empty / the default where it is absent."""
    if not isinstance(m, dict):
        raise BundleError(f"{where} should hold a JSON object")
    if m.get("format") != FORMAT:
        raise BundleError(f"{where}: format is {m.get('format')!r}, expected {FORMAT!r}")
    version = m.get("format_version")
    if version not in READABLE_VERSIONS or isinstance(version, bool):
        raise BundleError(f"{where}: format version {version!r} is not supported (this sami_rt reads versions "
                          f"{', '.join(map(str, READABLE_VERSIONS))}); export the model again or upgrade sami-rt")
    img = _require(m, "image", dict, where)
    C, H, W = (_require(img, k, int, where + " image") for k in ("channels", "height", "width"))
    D = _require(m, "latent_dim", int, where)
    if min(C, H, W, D) < 1:
        raise BundleError(f"{where}: image shape and latent dimension must be positive, got {(C, H, W)} and {D}")
    training = m.get("training") or {}
    if not isinstance(training, dict):
        raise BundleError(f"{where}: field 'training' should be an object, got {training!r:.60}")
    config = training.get("config") if isinstance(training.get("config"), dict) else {}
    if "preprocess" in img:
        pre = Preprocess.from_json(img["preprocess"], where)
    else:
        pre = preprocess_for(config)
    if min(H, W) - 2 * pre.pad < 1:
        raise BundleError(f"{where}: image.preprocess.pad {pre.pad} leaves no content in a {H}x{W} image")
    sched = _require(m, "schedule", dict, where)
    abar = _require(sched, "abar", list, where + " schedule")
    try:
        abar = np.asarray(abar, dtype=np.float64)
    except (TypeError, ValueError, OverflowError):  # nested, non-numeric or out-of-range entries
        abar = np.zeros(0)
    if abar.ndim != 1 or len(abar) < 1 or not np.all(np.isfinite(abar)) or not np.all((abar > 0) & (abar < 1)):
        raise BundleError(f"{where}: schedule.abar must be a list of numbers in (0, 1)")
    if len(abar) > 1 and not np.all(np.diff(abar) < 0):
        raise BundleError(f"{where}: schedule.abar must decrease with t")
    param = m.get("parameterisation", "eps")
    if param not in PARAMETERISATIONS:
        raise BundleError(f"{where}: parameterisation {param!r} is not one of {PARAMETERISATIONS}")
    sampling = m.get("sampling", {})
    if not isinstance(sampling, dict):
        raise BundleError(f"{where}: field 'sampling' should be an object, got {sampling!r:.60}")
    s = sampling.get("scale", 1.0)
    if not is_finite_number(s) or s <= 0:
        raise BundleError(f"{where}: sampling.scale must be a positive number, got {s!r:.60}")
    steps = sampling.get("steps")
    if steps is not None and (isinstance(steps, bool) or not isinstance(steps, int) or not 1 <= steps <= len(abar)):
        raise BundleError(f"{where}: sampling.steps must be a whole number of steps from 1 to T={len(abar)}, "
                          f"got {steps!r:.60}")
    try:
        interval = check_interval(sampling.get("interval", FULL_INTERVAL))
    except ValueError as e:
        raise BundleError(f"{where}: sampling.interval: {e}") from None
    if "architecture" in m:
        arch = Architecture.from_json(m["architecture"], where)
    else:
        try:
            arch = Architecture.from_config(config) if config else None
        except KeyError:
            arch = None
    dims = {"C": C, "H": H, "W": W, "D": D}
    graphs = _graphs(m, "graphs", dims, where)
    graphs_fp16 = _graphs(m, "graphs_fp16", dims, where) if "graphs_fp16" in m else {}
    engines = {}
    engines_json = m.get("engines") or {}
    if not isinstance(engines_json, dict):
        raise BundleError(f"{where}: field 'engines' should be an object, got {engines_json!r:.60}")
    for key, e in engines_json.items():
        ew = f"{where} engine {key!r}"
        f = _file_entry(e, ew)
        prof = e.get("batch_profile") or list(TRT_PROFILE)
        if (not isinstance(prof, list) or len(prof) != 3 or not all(isinstance(v, int) and v >= 1 for v in prof)
                or not prof[0] <= prof[1] <= prof[2]):
            raise BundleError(f"{ew}: batch_profile must be three increasing positive integers, got {prof!r:.60}")
        engines[key] = EngineEntry(f.file, f.sha256, key, str(e.get("tensorrt", "")), str(e.get("gpu", "")),
                                   str(e.get("precision", "float32")), tuple(prof))
    reference = _file_entry(m["reference"], f"{where} reference") if m.get("reference") is not None else None
    flops = m.get("flops") or {}
    if not isinstance(flops, dict) or not all(isinstance(v, int) and not isinstance(v, bool) for v in flops.values()):
        raise BundleError(f"{where}: field 'flops' should map graph names to integers")
    evaluation = m.get("evaluation") or {}
    if not isinstance(evaluation, dict):
        raise BundleError(f"{where}: field 'evaluation' should be an object, got {evaluation!r:.60}")
    desc = m.get("description") or ""
    vrange = _variance_range(m["posterior_variance"], where) if m.get("posterior_variance") is not None else None
    return Manifest(ImageSpec(C, H, W, pre), D, abar, {k: v for k, v in sched.items() if k != "abar"}, param, arch,
               graphs, graphs_fp16, engines, reference, dict(flops), float(s), training, evaluation,
               desc if isinstance(desc, str) else str(desc), m.get("export") or {}, int(version),
               str(m.get("sami_rt_version", "")), variance_range=vrange, sampling_steps=steps,
               sampling_interval=interval)


def _variance_range(v, where: str) -> VarianceRange:
    """The optional ``posterior_variance`` record (absent from bundles exported before it existed)."""
    w = f"{where} posterior_variance"
    if not isinstance(v, dict):
        raise BundleError(f"{w} should be a JSON object, got {v!r:.60}")
    r, q, n = v.get("range"), v.get("quantiles", [0.01, 0.99]), v.get("images", 0)
    if not (isinstance(r, list) and len(r) == 2 and all(map(is_finite_number, r)) and r[0] <= r[1]):
        raise BundleError(f"{w}: range must be two finite numbers, low <= high, got {r!r:.60}")
    if not (isinstance(q, list) and len(q) == 2 and all(is_finite_number(a) and 0 <= a <= 1 for a in q)):
        raise BundleError(f"{w}: quantiles must be two numbers in [0, 1], got {q!r:.60}")
    if isinstance(n, bool) or not isinstance(n, int) or n < 0:
        raise BundleError(f"{w}: images must be a count, got {n!r:.60}")
    return VarianceRange(float(r[0]), float(r[1]), (float(q[0]), float(q[1])), n)


def _require(d: dict, key: str, kind, where: str):
    if key not in d:
        raise BundleError(f"{where} lacks the field {key!r}")
    v = d[key]
    if not isinstance(v, kind) or isinstance(v, bool) and kind is not bool:
        raise BundleError(f"{where}: field {key!r} should be {getattr(kind, '__name__', kind)}, got {v!r:.60}")
    return v


def _file_entry(e, where: str) -> FileEntry:
    if not isinstance(e, dict):
        raise BundleError(f"{where} should be a JSON object")
    name = _require(e, "file", str, where)
    digest = e.get("sha256", "")
    if not isinstance(digest, str):
        raise BundleError(f"{where}: field 'sha256' should be str, got {digest!r:.60}")
    return FileEntry(name, digest)


def _graphs(m: dict, key: str, dims: dict[str, int], where: str) -> dict[str, GraphEntry]:
    out = {}
    for name, g in _require(m, key, dict, where).items():
        gw = f"{where} graph {name!r}" if key == "graphs" else f"{where} {key} graph {name!r}"
        if name not in GRAPHS:
            raise BundleError(f"{gw} is not one of the contract graphs {sorted(GRAPHS)}")
        f = _file_entry(g, gw)
        _require(g, "sha256", str, gw)
        want = GRAPHS[name].io(dims)
        for side in ("inputs", "outputs"):
            got = _require(g, side, list, gw)
            if [(s.get("name"), s.get("shape")) for s in got if isinstance(s, dict)] != [
                    (s["name"], s["shape"]) for s in want[side]]:
                raise BundleError(f"{gw}: {side} {got!r:.200} differ from the contract {want[side]!r:.200}")
        opset = g.get("opset", 0)
        out[name] = GraphEntry(f.file, f.sha256, name, tuple(g["inputs"]), tuple(g["outputs"]),
                               int(opset) if is_finite_number(opset) else 0, str(g.get("precision", "float32")))
    return out
