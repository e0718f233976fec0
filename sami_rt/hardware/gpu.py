"""The GPU this process sees, named once: the bench's report, the TensorRT backend's check of a bundle's
engines and export's tag on the engines it builds all ask :func:`gpu_name`, so that tag and check agree."""

from __future__ import annotations

import os
import shutil
import subprocess

from sami_rt.errors import BackendError


def cuda_runtime():
    """cuda-python's CUDA runtime module (``pip install sami-rt[trt]``), or None where it is not installed."""
    try:
        from cuda.bindings import runtime as cudart  # cuda-python >= 12.8
    except ImportError:
        try:
            from cuda import cudart  # older cuda-python
        except ImportError:
            return None
    return cudart


def check_cuda(result, what: str):
    """cuda-python returns (err, *values): raise BackendError on an error, return the values."""
    err, *vals = result if isinstance(result, tuple) else (result,)
    if int(err) != 0:
        raise BackendError(f"CUDA error in {what}: {err}")
    return vals[0] if len(vals) == 1 else vals


def _nvidia_smi_name() -> str:
    if shutil.which("nvidia-smi") is None:
        raise BackendError("neither cuda-python nor nvidia-smi is installed")
    cmd = ["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"]
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:  # CUDA's device 0 is the first device listed there
        first = visible.split(",")[0].strip()
        if not first or first.startswith("-"):
            raise BackendError(f"CUDA_VISIBLE_DEVICES={visible!r} hides every GPU")
        cmd += ["-i", first]
    try:
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError) as e:
        raise BackendError(f"nvidia-smi failed ({e})") from None
    if r.returncode != 0 or not r.stdout.strip():
        raise BackendError(f"nvidia-smi lists no GPU ({(r.stderr or r.stdout).strip()[:200] or 'no output'})")
    return r.stdout.strip().splitlines()[0].strip()


def gpu_name(required: bool = False) -> str | None:
    """The name of CUDA device 0 as the CUDA runtime reports it (through cuda-python), or where that is not
    installed, as nvidia-smi lists it (the same name). None where there is none, or with ``required`` a
    BackendError that says why."""
    cudart = cuda_runtime()
    try:
        if cudart is None:
            return _nvidia_smi_name()
        try:
            name = check_cuda(cudart.cudaGetDeviceProperties(0), "cudaGetDeviceProperties").name
        except Exception as e:  # no driver, no device
            raise BackendError(f"no CUDA device is usable ({e})") from None
        return (name.decode() if isinstance(name, bytes) else str(name)).rstrip("\x00")
    except BackendError:
        if required:
            raise
        return None
