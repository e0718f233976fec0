"""Backends behind one interface: run the bundle's graphs on some device.

A backend offers ``encode(x) -> (mu, var)``, ``denoise(x_t, t) -> eps`` and
``guided_eps(x_t, t, z, mask, scale) -> eps_hat`` on float32 numpy arrays, and a ``name`` that says what
actually runs (provider and device). ``open_backend`` picks one for ``device``.
"""

from __future__ import annotations

DEVICES = ("auto", "cpu", "cuda", "tensorrt")


class BackendError(RuntimeError):
    """A requested device or backend is not available here, said in one sentence."""


def open_backend(bundle, device: str = "auto", threads: int = 0):
    from sami_rt.backends.onnxruntime import OrtBackend

    if device not in DEVICES:
        raise BackendError(f"unknown device {device!r}; expected one of {', '.join(DEVICES)}")
    return OrtBackend(bundle, device, threads)
