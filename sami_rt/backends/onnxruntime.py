"""onnxruntime backend: CPU, CUDA and TensorRT execution providers.

onnxruntime and onnxruntime-gpu install the same module; a GPU package that cannot load its CUDA libraries
silently falls back to the CPU provider, so the backend checks the providers each session actually got
and says so (BackendError for an explicit GPU request, a note in ``name`` for ``auto``).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from sami_rt.backends import BackendError

PROVIDERS = {
    "cpu": ["CPUExecutionProvider"],
    "cuda": ["CUDAExecutionProvider", "CPUExecutionProvider"],
    "tensorrt": ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"],
}


def engine_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "sami-rt" / "trt-engines"


class OrtBackend:
    def __init__(self, bundle, device: str = "auto", threads: int = 0):
        import onnxruntime as ort

        self.bundle = bundle
        available = ort.get_available_providers()
        if device == "auto":
            device = "tensorrt" if "TensorrtExecutionProvider" in available else (
                "cuda" if "CUDAExecutionProvider" in available else "cpu")
        wanted = PROVIDERS[device]
        if wanted[0] not in available:
            raise BackendError(f"device {device!r} needs onnxruntime's {wanted[0]}, but this onnxruntime offers only "
                               f"{', '.join(available)} (install onnxruntime-gpu on a CUDA machine, or use --device cpu)")
        self.device = device
        so = ort.SessionOptions()
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        so.log_severity_level = 3
        if threads:
            so.intra_op_num_threads = threads
        providers = []
        for p in wanted:
            if p == "TensorrtExecutionProvider":
                cache = engine_cache_dir()
                cache.mkdir(parents=True, exist_ok=True)
                providers.append((p, {"trt_engine_cache_enable": True, "trt_engine_cache_path": str(cache),
                                      "trt_fp16_enable": False}))
            else:
                providers.append(p)
        self._sessions = {}
        for name in ("encoder", "denoiser", "guided_eps"):
            if name not in bundle.graphs:
                raise BackendError(f"bundle {bundle.root} has no {name} graph")
            sess = ort.InferenceSession(str(bundle.graphs[name].path), so, providers=providers)
            got = sess.get_providers()
            if got[0] != wanted[0]:
                raise BackendError(f"onnxruntime could not start {wanted[0]} for the {name} graph (it fell back to "
                                   f"{got[0]}); check the CUDA libraries, or use --device cpu")
            self._sessions[name] = sess
        self.name = f"onnxruntime {ort.__version__} ({wanted[0]})"

    def encode(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        mu, var = self._sessions["encoder"].run(None, {"x": np.ascontiguousarray(x, dtype=np.float32)})
        return mu, var

    def denoise(self, x_t: np.ndarray, t: np.ndarray) -> np.ndarray:
        return self._sessions["denoiser"].run(None, {"x_t": x_t, "t": t})[0]

    def guided_eps(self, x_t, t, z, mask, scale) -> np.ndarray:
        return self._sessions["guided_eps"].run(None, {"x_t": x_t, "t": t, "z": z, "mask": mask, "scale": scale})[0]
