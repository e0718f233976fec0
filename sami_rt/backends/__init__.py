"""Backends behind one interface (:class:`~sami_rt.backends.base.Backend`): run the bundle's graphs on
some device. ``open_backend`` picks one for ``device``."""

from __future__ import annotations

from sami_rt.backends.base import DEVICES, Backend, pipeline_threads, usable_cpus
from sami_rt.errors import BackendError

__all__ = ["DEVICES", "Backend", "BackendError", "open_backend", "pipeline_threads", "usable_cpus"]


def open_backend(bundle, device: str = "auto", threads: int = 0, precision: str = "auto") -> Backend:
    """The fastest backend for ``device``:

    - ``tensorrt``: the bundle's own engines when they were built for this TensorRT and GPU, else
      onnxruntime's TensorRT provider (which builds and caches engines from the ONNX graphs), said in
      ``backend.notes``;
    - ``cuda``: onnxruntime's CUDA provider (I/O binding, CUDA graphs);
    - ``cpu``: onnxruntime's CPU provider;
    - ``auto``: the first of those that is present; an explicit device that is absent is a BackendError.
    """
    from sami_rt.backends.onnxruntime import OrtBackend

    if device not in DEVICES:
        raise BackendError(f"unknown device {device!r}; expected one of {', '.join(DEVICES)}")
    notes = []
    if device in ("tensorrt", "auto") and bundle.engines:
        from sami_rt.backends.tensorrt import TrtBackend, usable_engines

        engines, why = usable_engines(bundle, prefer_fp16=precision != "float32")
        if engines:
            try:
                return TrtBackend(bundle, engines)
            except BackendError as e:
                why = str(e)
        notes.append(f"the bundle's TensorRT engines are skipped: {why}")
    be = OrtBackend(bundle, device, threads, precision)
    be.notes[:0] = notes
    return be
