"""The model bundle on disk: a directory holding ``manifest.json`` and the files it names.

What the manifest holds is ``sami_rt.contract.format`` (the one definition shared by the writer, export/, and the
reader, the runtime). This module reads it: ``parse_manifest`` validates the JSON into the contract's types
(the only code that does), and ``read_bundle`` resolves and checks the files: every name stays inside the
bundle directory, every file exists, and with ``verify`` its sha256 matches. A bundle is treated as untrusted
input: reading it never executes code from it, and every inconsistency raises :class:`BundleError` with a
sentence that names the file and the problem.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from sami_rt.contract.format import (FORMAT, FORMAT_VERSION, GRAPHS, MANIFEST, PARAMETERISATIONS, READABLE_VERSIONS,
                              TRT_PROFILE, Architecture, EngineEntry, FileEntry, GraphEntry, ImageSpec, Manifest,
                              Preprocess, VarianceRange, is_finite_number, preprocess_for)
from sami_rt.errors import BundleError

__all__ = ["Bundle", "BundleError", "EngineInfo", "FORMAT", "FORMAT_VERSION", "GRAPHS", "GraphInfo", "MANIFEST",
           "Manifest", "is_finite_number", "loads_manifest", "parse_manifest", "read_bundle", "sha256_file",
           "write_manifest"]


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()


@dataclass(frozen=True)
class GraphInfo:
    name: str
    path: Path
    inputs: list[dict]
    outputs: list[dict]
    opset: int
    precision: str
    sha256: str


@dataclass(frozen=True)
class EngineInfo:
    """A TensorRT plan: usable only with the same TensorRT version on the same GPU model."""

    name: str
    path: Path
    tensorrt: str
    gpu: str
    precision: str
    batch_profile: tuple[int, int, int] = TRT_PROFILE


@dataclass(frozen=True)
class Bundle:
    """A validated bundle: the typed manifest, and the files it names resolved inside ``root``."""

    root: Path
    manifest: Manifest
    graphs: dict[str, GraphInfo] = field(default_factory=dict)
    graphs_fp16: dict[str, GraphInfo] = field(default_factory=dict)
    engines: dict[str, EngineInfo] = field(default_factory=dict)
    reference: Path | None = None  # the reference model's weights (npz, no pickle), for sami_reference

    @property
    def image(self) -> ImageSpec:
        return self.manifest.image

    @property
    def channels(self) -> int:
        return self.manifest.image.channels

    @property
    def height(self) -> int:
        return self.manifest.image.height

    @property
    def width(self) -> int:
        return self.manifest.image.width

    @property
    def latent_dim(self) -> int:
        return self.manifest.latent_dim

    @property
    def abar(self) -> np.ndarray:
        return self.manifest.abar

    @property
    def parameterisation(self) -> str:
        return self.manifest.parameterisation

    @property
    def default_scale(self) -> float:
        """The guidance scale sampling uses unless told otherwise (manifest sampling.scale; 1, the exact
        model, where the bundle names none)."""
        return self.manifest.sampling_scale

    @property
    def default_steps(self) -> int | None:
        """The DDPM steps sampling takes unless told otherwise (manifest sampling.steps: fewer than 100 measured
        to match 100 by benchmarks/sampler_steps.py, or more where 100 lose what the model is for, as the guide's
        class for fashion-mnist); None where the bundle records none (the runtime takes 100)."""
        return self.manifest.sampling_steps

    @property
    def T(self) -> int:
        return len(self.abar)

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return (self.channels, self.height, self.width)


def _inside(root: Path, name: str, where: str) -> Path:
    if not isinstance(name, str) or not name:
        raise BundleError(f"{where}: file name {name!r} is not a file name")
    p = (root / name).resolve()
    if root.resolve() not in p.parents:
        raise BundleError(f"{where}: file {name!r} points outside the bundle directory {root}")
    return p


def read_bundle(root: str | Path, verify: bool = True) -> Bundle:
    """Read and validate ``root/manifest.json``; ``verify`` checks every file's sha256."""
    root = Path(root)
    mpath = root / MANIFEST
    if not root.is_dir():
        raise BundleError(f"model bundle {root} is not a directory")
    if not mpath.is_file():
        raise BundleError(f"{root} is not a model bundle: {MANIFEST} is missing")
    try:
        text = mpath.read_bytes().decode()
    except UnicodeDecodeError as e:
        raise BundleError(f"{mpath} is not valid JSON ({e})") from None
    where = str(mpath)
    m = loads_manifest(text, where)

    def resolve(e: FileEntry, w: str) -> Path:
        path = _inside(root, e.file, w)
        if not path.is_file():
            raise BundleError(f"{w}: file {e.file} is missing from {root}")
        if verify:
            if not e.sha256:
                raise BundleError(f"{w} lacks the field 'sha256'")
            if sha256_file(path) != e.sha256:
                raise BundleError(f"{w}: checksum mismatch for {e.file} (the file changed after export)")
        return path

    def graphs(entries, key):
        out = {}
        for name, g in entries.items():
            gw = f"{where} graph {name!r}" if key == "graphs" else f"{where} {key} graph {name!r}"
            out[name] = GraphInfo(name, resolve(g, gw), list(g.inputs), list(g.outputs), g.opset, g.precision,
                                  g.sha256)
        return out

    engines = {k: EngineInfo(k, resolve(e, f"{where} engine {k!r}"), e.tensorrt, e.gpu, e.precision,
                             e.batch_profile) for k, e in m.engines.items()}
    reference = resolve(m.reference, f"{where} reference") if m.reference is not None else None
    return Bundle(root, m, graphs(m.graphs, "graphs"), graphs(m.graphs_fp16, "graphs_fp16"), engines, reference)


def loads_manifest(text: str, where: str) -> Manifest:
    try:
        m = json.loads(text)
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise BundleError(f"{where} is not valid JSON ({e})") from None
    return parse_manifest(m, where)


def parse_manifest(m, where: str) -> Manifest:
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
               str(m.get("sami_rt_version", "")), variance_range=vrange, sampling_steps=steps)


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


def write_manifest(root: Path, manifest: Manifest) -> None:
    """Write ``manifest.json`` atomically (temporary file, then rename)."""
    from sami_rt.media.files import atomic_write_bytes

    atomic_write_bytes(Path(root) / MANIFEST, manifest.dumps().encode())


MODELS_DIR = Path(__file__).resolve().parent.parent / "models"
DEFAULT_MODEL = MODELS_DIR / "disks-small"


def shipped_models() -> dict[str, Path]:
    """The bundles inside the package, by name (their directory names)."""
    if not MODELS_DIR.is_dir():
        return {}
    return {p.name: p for p in sorted(MODELS_DIR.iterdir()) if (p / "manifest.json").is_file()}


def resolve_model(model: str | os.PathLike | None) -> Path:
    """A bundle directory, or the name of a bundle shipped in the package (an existing path wins)."""
    if model is None:
        return DEFAULT_MODEL
    path = Path(model)
    if path.exists():
        return path
    shipped = shipped_models()
    if len(path.parts) == 1 and path.name in shipped:
        return shipped[path.name]
    raise BundleError(f"model bundle {model} is not a directory, nor the name of a model shipped in the package "
                      f"(shipped: {', '.join(shipped) or 'none'})")
