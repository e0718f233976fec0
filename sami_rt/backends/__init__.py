"""Backends behind one interface: run the bundle's graphs on some device.

A backend offers ``encode(x) -> (mu, var)``, ``denoise(x_t, t) -> eps`` and
``guided_eps(x_t, t, z, mask, scale) -> eps_hat`` on float32 numpy arrays, and a ``name`` that says what
actually runs (provider and device). ``open_backend`` picks one for ``device``.
"""

from __future__ import annotations

DEVICES = ("auto", "cpu", "cuda", "tensorrt")


def usable_cpus() -> int:
    """CPUs this process may run on (its affinity mask, so a container's or taskset's limit counts)."""
    import os

    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # not Linux
        return max(1, os.cpu_count() or 1)


def pipeline_threads() -> int:
    """Threads for work that runs beside a two-thread pipeline (video: a reader and the caller): the CPUs
    left to it, at least one; capped at half the CPUs, since onnxruntime and FFmpeg scale with physical
    cores and hyper-threads add little for them."""
    n = usable_cpus()
    return max(1, min(n - 2, n // 2))


class BackendError(RuntimeError):
    """A requested device or backend is not available here, said in one sentence."""


def open_backend(bundle, device: str = "auto", threads: int = 0, precision: str = "auto"):
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
