"""A bundle's graphs through OpenVINO checked against onnxruntime once, before OpenVINO is trusted with them.

OpenVINO 2026.4.1's CPU plugin computes a node wrongly when it shares a square weight constant with another node
(a ``Conv`` and the ``ConvTranspose`` of its input gradient, a ``Gemm`` and a ``MatMul`` through a ``Transpose``):
the second is computed with the first's prepared weights. Every guidance graph has such pairs (the forward node
and its input gradient read one weight); the ``celeba64`` architecture's and the spatial-softmax ``disks-3d`` encoder's have square ones,
and their guidance term came out off by more than its own size while the denoiser and the encoder agreed to
1e-6 (benchmarks/RESULTS.md, issues 29 and 31). The backend gives each node its own copy of a weight in
OpenVINO's graph as it reads it (openvino.py, ``unshare_constants``), which cures it; faults not yet met are
why the backend still checks. At batch 2, on fixed inputs, float32:
the encoder's means, the denoiser, and the guidance term (``guided_eps`` at scale 1 minus the denoiser) against
onnxruntime's, each within ``TOLERANCE`` of its range. A pass is remembered per OpenVINO version and graph
checksums in ``~/.cache/sami-rt/openvino-checked.json``, so each bundle pays the check (about a second for
disks-small) once per machine.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from sami_rt.contract.format import GRAPHS, RUNTIME_GRAPHS
from sami_rt.errors import BackendError
from sami_rt.media.files import atomic_write_bytes

TOLERANCE = 1e-2  # of each output's range; float32 reorderings give ~1e-5 on the guidance term, the fault > 1


def cache_file() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "sami-rt" / "openvino-checked.json"


def _key(bundle, version: str) -> str:
    sums = [bundle.graphs[n].sha256 or str(bundle.path(bundle.graphs[n])) for n in RUNTIME_GRAPHS]
    return f"{version}:{':'.join(sums)}"


def _checked() -> dict:
    try:
        return json.loads(cache_file().read_text())
    except (OSError, ValueError):
        return {}


def _remember(key: str) -> None:
    done = _checked()
    done[key] = True
    try:
        cache_file().parent.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(cache_file(), (json.dumps(done, indent=1) + "\n").encode())
    except OSError:  # a read-only home: check again next time
        pass


def errors_against_onnxruntime(f32, bundle) -> dict[str, float]:
    """{output: largest difference from onnxruntime over its range} of a float32 OpenVINO backend."""
    from sami_rt.backends.onnxruntime import OrtBackend  # onnxruntime loads for the check alone

    ort = OrtBackend(bundle, "cpu", 1, "float32")
    rng = np.random.default_rng(31)
    dims = bundle.manifest.dims
    g = GRAPHS["guided_eps"].example_inputs(rng, 2, dims, bundle.manifest.T)
    g["mask"][:] = 1
    g["scale"][:] = 1
    x = GRAPHS["encoder"].example_inputs(rng, 2, dims, bundle.manifest.T)["x"]

    def rel(a, b):
        return float(np.abs(a - b).max() / max(float(np.abs(b).max()), 1e-12))

    out = {"encoder mu": rel(f32.encode(x)[0], ort.encode(x)[0])}
    d_ov, d_ort = f32.denoise(g["x_t"], g["t"]), ort.denoise(g["x_t"], g["t"])
    out["denoiser"] = rel(d_ov, d_ort)
    out["guidance term of guided_eps"] = rel(f32.guided_eps(**g) - d_ov, ort.guided_eps(**g) - d_ort)
    return out


def check_bundle(backend, version: str) -> None:
    """BackendError unless OpenVINO computes this bundle's graphs as onnxruntime does (once per bundle).
    ``backend``: an OpenVINO backend (``backends/openvino.py``, which imports this module, not the reverse)."""
    bundle = backend.bundle
    key = _key(bundle, version)
    if _checked().get(key):
        return
    f32 = backend if backend.precision == "float32" else type(backend)(bundle, backend.threads, "float32",
                                                                       check=False)
    errs = errors_against_onnxruntime(f32, bundle)
    bad = {k: e for k, e in errs.items() if not e <= TOLERANCE}
    if bad:
        what = ", ".join(f"{k} by {e:.2g} of its range" for k, e in bad.items())
        raise BackendError(f"OpenVINO {version} computes bundle {bundle.root}'s graphs wrongly here (against "
                           f"onnxruntime: {what}; a fault of OpenVINO's CPU plugin); use --device cpu")
    _remember(key)
