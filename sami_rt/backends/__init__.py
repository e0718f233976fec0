"""Backends behind one interface (:class:`~sami_rt.backends.base.Backend`): run the bundle's graphs on
some device. ``open_backend`` picks one for ``device``."""

from __future__ import annotations

from sami_rt.backends.base import DEVICES, Backend
from sami_rt.backends.onnxruntime import OrtBackend
from sami_rt.backends.openvino import INSTALL, OpenVinoBackend, openvino_version
from sami_rt.backends.precision import normalize_precision
from sami_rt.errors import BackendError
from sami_rt.hardware.cpuinfo import bf16_support

__all__ = ["DEVICES", "Backend", "BackendError", "device_report", "open_backend"]


def open_backend(bundle, device: str = "auto", threads: int = 0, precision: str = "auto") -> Backend:
    """The fastest backend for ``device``:

    - ``tensorrt``: the bundle's own engines when they were built for this TensorRT and GPU, else
      onnxruntime's TensorRT provider (which builds and caches engines from the ONNX graphs), said in
      ``backend.notes``;
    - ``cuda``: onnxruntime's CUDA provider (I/O binding, CUDA graphs);
    - ``cpu``: onnxruntime's CPU provider;
    - ``openvino``: OpenVINO on the CPU (``backends/openvino.py``), float32 or bfloat16;
    - ``auto``: the first of tensorrt, cuda, cpu that is present, except that ``precision`` bfloat16 on a CPU
      with bf16 and OpenVINO installed picks ``openvino`` (the one backend that runs bf16); an explicit device
      that is absent is a BackendError.

    ``precision``: ``auto``, ``float32``, ``float16`` (GPUs), ``bfloat16`` (OpenVINO), or f32, f16, bf16.
    """
    if device not in DEVICES:
        raise BackendError(f"unknown device {device!r}; expected one of {', '.join(DEVICES)}")
    precision = normalize_precision(precision)
    notes = []
    if device == "openvino" or (device == "auto" and precision == "bfloat16" and _openvino_bf16()):
        try:
            return OpenVinoBackend(bundle, threads, precision)
        except BackendError as e:
            if device == "openvino":
                raise
            notes.append(f"OpenVINO is skipped: {e}")
    if precision == "bfloat16":  # onnxruntime has no bf16 path for these graphs
        notes.append(f"--precision bf16: onnxruntime runs these graphs in float32 only; running float32 ({_bf16_why()})")
        precision = "float32"
    why = None
    if device in ("tensorrt", "auto") and bundle.engines:
        from sami_rt.backends.tensorrt import TrtBackend, usable_engines  # optional: TensorRT

        engines, why = usable_engines(bundle, prefer_fp16=precision != "float32")
        if engines:
            try:
                return TrtBackend(bundle, engines)
            except BackendError as e:
                why = str(e)
        notes.append(f"the bundle's TensorRT engines are skipped: {why}")
    if device == "tensorrt":
        import onnxruntime as ort  # onnxruntime loads when asked (0.3 s)

        offered = ort.get_available_providers()
        if "TensorrtExecutionProvider" not in offered:
            raise BackendError(f"device 'tensorrt' is not available here: {_no_trt(why, offered)}; use --device "
                               "cpu (`sami-rt info` lists the devices)")
    be = OrtBackend(bundle, device, threads, precision)
    be.notes[:0] = notes
    return be


def _openvino_bf16() -> bool:
    return openvino_version() is not None and bf16_support()[0]


def _bf16_why() -> str:
    ok, why = bf16_support()
    if not ok:
        return why
    return "--device openvino runs bf16 on this CPU" + ("" if openvino_version() else f" once installed: {INSTALL}")


def _no_trt(engines_why: str | None, offered=None) -> str:
    engines = (f"the bundle's own engines cannot run ({engines_why})" if engines_why else
               'the bundle has no TensorRT engines (export/run.py --tensorrt builds them, pip install "sami-rt[trt]" '
               "runs them)")
    have = f"; it offers {', '.join(offered)}" if offered else ""
    return (f"this onnxruntime has no TensorrtExecutionProvider (onnxruntime-gpu on a CUDA machine has it{have}) "
            f"and {engines}")


def device_report(bundle=None) -> list[tuple[str, bool, str]]:
    """(device, usable here, what would run it or why nothing can) for cpu, cuda, tensorrt and openvino: what
    onnxruntime offers (a GPU provider it lists may still fail to start without its CUDA libraries) and, for
    tensorrt, the bundle's own engines."""
    import onnxruntime as ort  # onnxruntime loads when asked (0.3 s)

    offered = ort.get_available_providers()
    rows = [("cpu", True, "onnxruntime's CPUExecutionProvider")]
    if "CUDAExecutionProvider" in offered:
        rows.append(("cuda", True, "onnxruntime's CUDAExecutionProvider"))
    else:
        rows.append(("cuda", False, "this onnxruntime has no CUDAExecutionProvider (install onnxruntime-gpu on a CUDA "
                                    "machine)"))
    engines, why = {}, None
    if bundle is not None and bundle.engines:
        from sami_rt.backends.tensorrt import usable_engines  # optional: TensorRT

        engines, why = usable_engines(bundle)
    if engines:
        rows.append(("tensorrt", True, "the bundle's own TensorRT engines"))
    elif "TensorrtExecutionProvider" in offered:
        rows.append(("tensorrt", True, "onnxruntime's TensorrtExecutionProvider"))
    else:
        rows.append(("tensorrt", False, _no_trt(why)))
    v = openvino_version()
    ok, bf16 = bf16_support()
    rows.append(("openvino", True, f"OpenVINO {v} on the CPU: float32" + (", bfloat16" if ok else f"; no bf16: {bf16}"))
                if v else ("openvino", False, f"OpenVINO is not installed ({INSTALL})"))
    return rows
