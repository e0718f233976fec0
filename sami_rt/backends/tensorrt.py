"""Native TensorRT backend: the bundle's serialized engines (``*.plan``), run with TensorRT's Python API and
CUDA through ``cuda-python`` (``pip install sami-rt[trt]``).

Per batch size the backend allocates device buffers once, binds them to an execution context, runs the
engine once and then captures a CUDA graph of one call on its own stream; a sampling step is then: copy x
(and t, z, mask, scale) in, launch the graph, copy eps_hat out, synchronise. Engines are specific to a
TensorRT version and a GPU model: ``usable_engines`` says which of the bundle's engines can run here, and
``open_backend`` falls back to onnxruntime's TensorRT provider (which builds and caches its own engines
from the ONNX graphs) for the rest, saying why.
"""

from __future__ import annotations

import threading
from collections import OrderedDict

import numpy as np

from sami_rt.errors import BackendError
from sami_rt.contract.format import RUNTIME_GRAPHS as NEEDED
from sami_rt.hardware.gpu import check_cuda as _check
from sami_rt.hardware.gpu import cuda_runtime, gpu_name

MAX_BOUND = 8


def usable_engines(bundle, prefer_fp16: bool = True) -> tuple[dict, str | None]:
    """({graph name: EngineEntry} this machine can run, None) or ({}, the reason in one sentence)."""
    if not bundle.engines:
        return {}, f"bundle {bundle.root} has no TensorRT engines (export it with --tensorrt on this GPU)"
    try:
        import tensorrt as trt  # optional: the [trt] extra
    except ImportError:
        return {}, "the tensorrt package is not installed (pip install 'sami-rt[trt]')"
    if cuda_runtime() is None:
        return {}, "the cuda-python package is not installed (pip install 'sami-rt[trt]')"
    try:
        gpu = gpu_name(required=True)
    except BackendError as e:  # no driver, no device
        return {}, str(e)
    out, why = {}, []
    for key, e in bundle.engines.items():
        if e.tensorrt != trt.__version__ or e.gpu != gpu:
            why.append(f"{e.file} was built by TensorRT {e.tensorrt} for {e.gpu}, this is TensorRT "
                       f"{trt.__version__} on {gpu}")
            continue
        out[key] = e
    fp16 = {k[: -len(".fp16")]: v for k, v in out.items() if k.endswith(".fp16")}
    fp32 = {k: v for k, v in out.items() if not k.endswith(".fp16")}
    chosen = {n: (fp16.get(n) or fp32.get(n)) if prefer_fp16 else fp32.get(n) for n in NEEDED}
    if any(v is None for v in chosen.values()):
        missing = [n for n, v in chosen.items() if v is None]
        return {}, (f"no usable engine for {', '.join(missing)}" + (f" ({why[0]})" if why else ""))
    return chosen, None


class _Context:
    """An engine's execution context at one batch size: device buffers, a stream and a CUDA graph."""

    def __init__(self, trt, cudart, engine, B: int, shapes: dict[str, tuple], out_names: list[str]):
        self.cudart, self.out_names = cudart, out_names
        self.ptrs, self.graph, self.stream = [], None, None
        self.inputs, self.outputs = {}, {}
        try:
            self._build(trt, cudart, engine, B, shapes)
        except BaseException:
            self.close()
            raise

    def _build(self, trt, cudart, engine, B, shapes):
        self.context = engine.create_execution_context()
        if self.context is None:
            raise BackendError("TensorRT could not create an execution context (out of GPU memory?)")
        # non-blocking: work on the legacy default stream elsewhere cannot sync with (or break) the capture
        self.stream = _check(cudart.cudaStreamCreateWithFlags(cudart.cudaStreamNonBlocking), "cudaStreamCreateWithFlags")
        for i in range(engine.num_io_tensors):
            name = engine.get_tensor_name(i)
            dtype = np.dtype(trt.nptype(engine.get_tensor_dtype(name)))
            shape = (B, *shapes[name])
            host = np.zeros(shape, dtype=dtype)
            dev = _check(cudart.cudaMalloc(max(host.nbytes, 1)), "cudaMalloc")
            self.ptrs.append(dev)
            # zeros, not leftovers: the warm-up run below reads the inputs (t indexes a table)
            _check(cudart.cudaMemsetAsync(dev, 0, max(host.nbytes, 1), self.stream), "cudaMemsetAsync")
            self.context.set_tensor_address(name, int(dev))
            if engine.get_tensor_mode(name) == trt.TensorIOMode.INPUT:
                if not self.context.set_input_shape(name, shape):
                    raise BackendError(f"TensorRT refused the shape {list(shape)} for input {name}")
                self.inputs[name] = (host, dev)
            else:
                self.outputs[name] = (host, dev)
        if not self.context.execute_async_v3(int(self.stream)):  # first run: lazy allocations happen here
            raise BackendError("TensorRT failed to run the engine")
        _check(cudart.cudaStreamSynchronize(self.stream), "cudaStreamSynchronize")
        graph = None
        try:
            mode = cudart.cudaStreamCaptureMode.cudaStreamCaptureModeThreadLocal
            _check(cudart.cudaStreamBeginCapture(self.stream, mode), "cudaStreamBeginCapture")
            ok = self.context.execute_async_v3(int(self.stream))
            graph = _check(cudart.cudaStreamEndCapture(self.stream), "cudaStreamEndCapture")
            if ok:
                self.graph = _check(cudart.cudaGraphInstantiate(graph, 0), "cudaGraphInstantiate")
        except BackendError:
            self.graph = None  # the call still runs, one enqueue per step instead of one graph launch
        finally:
            if graph is not None:
                cudart.cudaGraphDestroy(graph)  # the instantiated executable graph is independent of it

    def __call__(self, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        cudart = self.cudart
        h2d = cudart.cudaMemcpyKind.cudaMemcpyHostToDevice
        d2h = cudart.cudaMemcpyKind.cudaMemcpyDeviceToHost
        for name, (host, dev) in self.inputs.items():
            host[...] = feeds[name]
            _check(cudart.cudaMemcpyAsync(dev, host.ctypes.data, host.nbytes, h2d, self.stream), "cudaMemcpyAsync")
        if self.graph is not None:
            _check(cudart.cudaGraphLaunch(self.graph, self.stream), "cudaGraphLaunch")
        elif not self.context.execute_async_v3(int(self.stream)):
            raise BackendError("TensorRT failed to run the engine")
        for host, dev in self.outputs.values():
            _check(cudart.cudaMemcpyAsync(host.ctypes.data, dev, host.nbytes, d2h, self.stream), "cudaMemcpyAsync")
        _check(cudart.cudaStreamSynchronize(self.stream), "cudaStreamSynchronize")
        return [self.outputs[n][0].copy() for n in self.out_names]

    def close(self):
        cudart = self.cudart
        if self.stream is not None:
            cudart.cudaStreamSynchronize(self.stream)
        if self.graph is not None:
            cudart.cudaGraphExecDestroy(self.graph)
            self.graph = None
        self.context = None  # before the buffers it points at
        for p in self.ptrs:
            cudart.cudaFree(p)
        self.ptrs = []
        if self.stream is not None:
            cudart.cudaStreamDestroy(self.stream)
            self.stream = None


class TrtBackend:
    """Runs the bundle's TensorRT engines (see the module docstring)."""

    device = "tensorrt"

    def __init__(self, bundle, engines: dict):
        import tensorrt as trt  # optional: the [trt] extra

        self.trt, self.cudart, self.bundle = trt, cuda_runtime(), bundle
        self.notes: list[str] = []
        self.logger = trt.Logger(trt.Logger.ERROR)
        self.runtime = trt.Runtime(self.logger)
        self.engines, self.profiles = {}, {}
        for name, info in engines.items():
            engine = self.runtime.deserialize_cuda_engine(bundle.path(info).read_bytes())
            if engine is None:
                raise BackendError(f"TensorRT could not load {info.file} (built by TensorRT {info.tensorrt} "
                                   f"for {info.gpu})")
            self.engines[name] = engine
            lo, _, hi = info.batch_profile
            self.profiles[name] = (int(lo), int(hi))
        spec = {n: bundle.graphs[n] for n in NEEDED}
        self.shapes = {n: {s["name"]: tuple(s["shape"][1:]) for s in g.inputs + g.outputs} for n, g in spec.items()}
        self.out_names = {n: [s["name"] for s in g.outputs] for n, g in spec.items()}
        self.precision = "float16" if any(e.precision == "float16" for e in engines.values()) else "float32"
        self._contexts: OrderedDict = OrderedDict()
        self._lock = threading.RLock()  # contexts and their buffers are shared: one call at a time
        self.name = f"TensorRT {trt.__version__} engines ({self.precision}, CUDA graphs)"

    def _call(self, name: str, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        with self._lock:
            return self._call_locked(name, feeds)

    def _call_locked(self, name: str, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        B = len(next(iter(feeds.values())))
        lo, hi = self.profiles[name]
        if B > hi:  # beyond the engine's profile: split the batch
            parts = [self._call_locked(name, {k: v[i : i + hi] for k, v in feeds.items()}) for i in range(0, B, hi)]
            return [np.concatenate(p) for p in zip(*parts)]
        if B < lo:
            raise BackendError(f"batch {B} is below the {name} engine's profile minimum {lo}")
        key = (name, B)
        ctx = self._contexts.get(key)
        if ctx is None:
            ctx = _Context(self.trt, self.cudart, self.engines[name], B, self.shapes[name], self.out_names[name])
            if ctx.graph is None and not any("CUDA graph" in n for n in self.notes):
                self.notes.append(f"{name}: CUDA graph capture failed at batch {B}; that size runs one enqueue per call")
                self.name = self.name.replace(", CUDA graphs", ", CUDA graphs where capture succeeded")
            self._contexts[key] = ctx
            while len(self._contexts) > MAX_BOUND:
                self._contexts.popitem(last=False)[1].close()
        self._contexts.move_to_end(key)
        return ctx(feeds)

    def encode(self, x):
        mu, var = self._call("encoder", {"x": np.ascontiguousarray(x, dtype=np.float32)})
        return mu, var

    stream_encode = encode  # one engine context per batch size, serialised by the lock: nothing to split off

    def denoise(self, x_t, t):
        return self._call("denoiser", {"x_t": x_t, "t": t})[0]

    def guided_eps(self, x_t, t, z, mask, scale):
        return self._call("guided_eps", {"x_t": x_t, "t": t, "z": z, "mask": mask, "scale": scale})[0]

    def close(self):
        while self._contexts:  # contexts before the engines and the runtime they come from
            self._contexts.popitem()[1].close()

    def __del__(self):
        try:
            self.close()
        except Exception:
            pass
