"""What every backend is (:class:`Backend`) and the devices it can be asked for. Imported by the backends and
by their callers; imports neither."""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import numpy as np

DEVICES = ("auto", "cpu", "cuda", "tensorrt", "openvino")


@runtime_checkable
class Backend(Protocol):
    """Runs a bundle's graphs on one device, on float32 numpy arrays (int64 levels ``t``)."""

    name: str  # what actually runs: provider, device, precision
    device: str  # one of DEVICES but "auto"
    precision: str  # "float32", "float16" (the graphs or engines in use) or "bfloat16" (OpenVINO)
    notes: list[str]  # why something asked for was not used (one sentence each)

    def encode(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Posterior means and variances [B, D] of images [B, C, H, W]."""

    def stream_encode(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``encode`` for a pipeline that runs beside other threads (video): may use a session of its own."""

    def denoise(self, x_t: np.ndarray, t: np.ndarray) -> np.ndarray:
        """eps [B, C, H, W] of the denoiser alone."""

    def guided_eps(self, x_t: np.ndarray, t: np.ndarray, z: np.ndarray, mask: np.ndarray,
                   scale: np.ndarray) -> np.ndarray:
        """eps_hat [B, C, H, W]: the denoiser and the encoder's exact guidance, one call."""
