"""The model bundle: one definition shared by its writer (export/) and its reader (the runtime).

A bundle is a directory holding ``manifest.json`` and the graph files it names. The manifest records the
format version, the image shape and value range, the latent dimension, the noise schedule as data
(``abar`` for every level), the denoiser's parameterisation, and for every graph its file, input and
output names, shapes (``"batch"`` marks the dynamic axis), dtypes, opset and sha256. A bundle is treated
as untrusted input: reading it never executes code from it, and every inconsistency raises
:class:`BundleError` with a sentence that names the file and the problem.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

FORMAT = "sami-rt-bundle"
FORMAT_VERSION = 1
MANIFEST = "manifest.json"
PARAMETERISATIONS = ("eps",)

# The graph contract: names of inputs and outputs, and their shapes in terms of
# B (batch, dynamic), C, H, W (image) and D (latent dimension).
GRAPH_IO: dict[str, tuple[tuple[tuple[str, str], ...], tuple[tuple[str, str], ...]]] = {
    "encoder": ((("x", "BCHW"),), (("mu", "BD"), ("var", "BD"))),
    "denoiser": ((("x_t", "BCHW"), ("t", "B")), (("eps", "BCHW"),)),
    "guidance": ((("x_t", "BCHW"), ("z", "BD"), ("mask", "BD")), (("g", "BCHW"),)),
    "guided_eps": ((("x_t", "BCHW"), ("t", "B"), ("z", "BD"), ("mask", "BD"), ("scale", "B")), (("eps_hat", "BCHW"),)),
}
INPUT_DTYPES = {"t": "int64"}  # every other tensor is float32 (float16 graphs keep float32 inputs and outputs)


class BundleError(ValueError):
    """A model bundle that cannot be used, with the reason in one sentence."""


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()


def io_spec(graph: str, C: int, H: int, W: int, D: int) -> dict[str, list[dict]]:
    """Inputs and outputs of a contract graph with concrete shapes ("batch" for the dynamic axis)."""
    dims = {"B": "batch", "C": C, "H": H, "W": W, "D": D}
    ins, outs = GRAPH_IO[graph]

    def spec(name, axes):
        return {"name": name, "shape": [dims[a] for a in axes], "dtype": INPUT_DTYPES.get(name, "float32")}

    return {"inputs": [spec(n, a) for n, a in ins], "outputs": [spec(n, a) for n, a in outs]}


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


@dataclass(frozen=True)
class Bundle:
    """A validated bundle: paths resolved inside ``root``, checksums verified."""

    root: Path
    manifest: dict
    channels: int
    height: int
    width: int
    latent_dim: int
    abar: np.ndarray
    parameterisation: str
    graphs: dict[str, GraphInfo] = field(default_factory=dict)
    graphs_fp16: dict[str, GraphInfo] = field(default_factory=dict)
    engines: dict[str, EngineInfo] = field(default_factory=dict)
    reference: Path | None = None  # PyTorch weights (npz, no pickle) for the eager baseline of `sami-rt bench`
    # the guidance scale s that sampling uses unless told otherwise (manifest sampling.scale, validated by
    # read_bundle; 1, the exact model, where the bundle names none)
    default_scale: float = 1.0

    @property
    def T(self) -> int:
        return len(self.abar)

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return (self.channels, self.height, self.width)


def is_finite_number(v) -> bool:
    """A real number (not a bool) that a float holds finitely: False for 10**400, NaN, strings, None."""
    if isinstance(v, bool) or not isinstance(v, (int, float, np.integer, np.floating)):
        return False
    try:
        return bool(np.isfinite(float(v)))
    except OverflowError:
        return False


def _require(d: dict, key: str, kind, where: str):
    if key not in d:
        raise BundleError(f"{where} lacks the field {key!r}")
    v = d[key]
    if not isinstance(v, kind) or isinstance(v, bool) and kind is not bool:
        raise BundleError(f"{where}: field {key!r} should be {getattr(kind, '__name__', kind)}, got {v!r:.60}")
    return v


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
        m = json.loads(mpath.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise BundleError(f"{mpath} is not valid JSON ({e})") from None
    if not isinstance(m, dict):
        raise BundleError(f"{mpath} should hold a JSON object")
    where = str(mpath)
    if m.get("format") != FORMAT:
        raise BundleError(f"{where}: format is {m.get('format')!r}, expected {FORMAT!r}")
    version = m.get("format_version")
    if version != FORMAT_VERSION:
        raise BundleError(f"{where}: format version {version!r} is not supported (this sami_rt reads version "
                          f"{FORMAT_VERSION}); export the model again or upgrade sami-rt")
    img = _require(m, "image", dict, where)
    C, H, W = (_require(img, k, int, where + " image") for k in ("channels", "height", "width"))
    D = _require(m, "latent_dim", int, where)
    if min(C, H, W, D) < 1:
        raise BundleError(f"{where}: image shape and latent dimension must be positive, got {(C, H, W)} and {D}")
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
    graphs = _read_graphs(root, m, "graphs", C, H, W, D, verify)
    graphs_fp16 = _read_graphs(root, m, "graphs_fp16", C, H, W, D, verify) if "graphs_fp16" in m else {}
    engines = {}
    for key, e in (m.get("engines") or {}).items():
        path, _ = _entry_file(root, e, f"{where} engine {key!r}", verify)
        engines[key] = EngineInfo(key, path, str(e.get("tensorrt", "")), str(e.get("gpu", "")),
                                  str(e.get("precision", "float32")))
    reference = None
    if m.get("reference") is not None:
        reference, _ = _entry_file(root, m["reference"], f"{where} reference", verify)
    return Bundle(root, m, C, H, W, D, abar, param, graphs, graphs_fp16, engines, reference, float(s))


def _entry_file(root: Path, e, where: str, verify: bool, need_digest: bool = False) -> tuple[Path, str | None]:
    """A manifest entry naming a file (graph, engine, reference): inside the bundle, present, and with
    ``verify`` its sha256 checked. Returns (path, the declared sha256)."""
    if not isinstance(e, dict):
        raise BundleError(f"{where} should be a JSON object")
    path = _inside(root, _require(e, "file", str, where), where)
    if not path.is_file():
        raise BundleError(f"{where}: file {e['file']} is missing from {root}")
    digest = _require(e, "sha256", str, where) if verify or need_digest else e.get("sha256")
    if verify and sha256_file(path) != digest:
        raise BundleError(f"{where}: checksum mismatch for {e['file']} (the file changed after export)")
    return path, digest


def _read_graphs(root: Path, m: dict, key: str, C: int, H: int, W: int, D: int, verify: bool) -> dict:
    where = str(root / MANIFEST)
    graphs = {}
    for name, g in _require(m, key, dict, where).items():
        gw = f"{where} graph {name!r}" if key == "graphs" else f"{where} {key} graph {name!r}"
        if name not in GRAPH_IO:
            raise BundleError(f"{gw} is not one of the contract graphs {sorted(GRAPH_IO)}")
        path, digest = _entry_file(root, g, gw, verify, need_digest=True)
        want = io_spec(name, C, H, W, D)
        for side in ("inputs", "outputs"):
            got = _require(g, side, list, gw)
            if [(s.get("name"), s.get("shape")) for s in got if isinstance(s, dict)] != [
                    (s["name"], s["shape"]) for s in want[side]]:
                raise BundleError(f"{gw}: {side} {got!r:.200} differ from the contract {want[side]!r:.200}")
        graphs[name] = GraphInfo(name, path, g["inputs"], g["outputs"], int(g.get("opset", 0)),
                                 str(g.get("precision", "float32")), digest)
    return graphs


def write_manifest(root: Path, manifest: dict) -> None:
    """Write ``manifest.json`` atomically (temporary file, then rename)."""
    from sami_rt.io import atomic_write_bytes

    atomic_write_bytes(Path(root) / MANIFEST, (json.dumps(manifest, indent=1) + "\n").encode())


def new_manifest(C: int, H: int, W: int, D: int, abar: np.ndarray, schedule: dict[str, Any], **extra) -> dict:
    from sami_rt import __version__

    return {"format": FORMAT, "format_version": FORMAT_VERSION, "sami_rt_version": __version__,
            "image": {"channels": C, "height": H, "width": W, "range": [-1.0, 1.0],
                      "to_model": "x = pixel / 127.5 - 1 (pixels 0..255)", "from_model": "pixel = (x + 1) * 127.5"},
            "latent_dim": D, "schedule": {**schedule, "abar": [float(a) for a in abar]},
            "parameterisation": "eps", "graphs": {}, "engines": {}, **extra}
