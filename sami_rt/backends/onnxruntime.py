"""onnxruntime backend: CPU, CUDA and TensorRT execution providers.

onnxruntime and onnxruntime-gpu install the same module; a GPU package that cannot load its CUDA libraries
silently falls back to the CPU provider, so the backend checks the providers each session actually got
and says so (BackendError for an explicit GPU request, a note in ``name`` for ``auto``).

On a GPU the sampling graphs (``guided_eps``, ``denoiser``) run through I/O binding on device buffers that
are allocated once per batch size and never move; with the CUDA provider, the first call at a batch size
captures a CUDA graph (one per batch size, ``gpu_graph_id``) and every later step replays it: one graph
launch per step, plus the copy of x in and eps_hat out. Where the provider cannot capture (a node placed
on the CPU), the backend runs without graphs and says so in ``notes``.
"""

from __future__ import annotations

import os
import threading
from collections import OrderedDict
from pathlib import Path

import numpy as np

from sami_rt.contract.bundle import BundleError
from sami_rt.contract.format import RUNTIME_GRAPHS
from sami_rt.errors import BackendError
from sami_rt.hardware.cpus import pipeline_threads

PROVIDERS = {
    "cpu": ["CPUExecutionProvider"],
    "cuda": ["CUDAExecutionProvider", "CPUExecutionProvider"],
    "tensorrt": ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"],
}
LOOP_GRAPHS = ("guided_eps", "denoiser")
MAX_CAPTURED = 8  # batch sizes per graph that get a CUDA graph, kept for the session's life
MAX_UNCAPTURED = 8  # further batch sizes: bound buffers without a graph, least recently used evicted
CUDA_GRAPH_MIN_ORT = (1, 18)  # several graphs per session (gpu_graph_id); older versions replay the first


def engine_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "sami-rt" / "trt-engines"


def default_threads() -> int:
    """The CPU provider's thread count when the caller gives none: ``OMP_NUM_THREADS`` where it is set to a
    positive integer (the convention of OpenMP-based libraries; onnxruntime itself ignores it), else 0 (its own
    default: one thread per core; ``cpu_session_options`` turns their spinning off)."""
    v = os.environ.get("OMP_NUM_THREADS", "").strip()
    return int(v) if v.isdigit() and int(v) > 0 else 0


def cpu_session_options(ort, threads: int = 0):
    """Session options for the CPU provider, chosen by measurement (benchmarks/RESULTS.md). ``threads`` 0:
    ``default_threads()``."""
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.log_severity_level = 3
    threads = threads or default_threads()
    if threads:
        so.intra_op_num_threads = threads
    # Idle intra-op threads wait without spinning: on the 2-vCPU machine shared with other work (load 3.3-3.9),
    # guided_eps with 2 threads took 0.56-0.71x the time at batch 1, 0.54x at 16 and 0.70x at 64 with spinning
    # off, each setting alone in its process (benchmarks/bench_batch64.py --isolated; RESULTS.md, issue 19);
    # spinning threads take the cores that the other threads, or other processes, need. Outputs are identical.
    # On the quiet machine (load 1.2-1.9) spinning off costs 1.2x at batch 1 with 2 threads (4.1 -> 5.0 ms) and
    # nothing at 16 and 64: a smaller loss than the gain under load, so it stays off.
    so.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return so


class _Bound:
    """One graph at one batch size, its inputs and outputs bound to device buffers that never move, so a
    CUDA graph captured on the first run stays valid for the later ones (only their contents change)."""

    def __init__(self, ort, sess, B: int, inputs: dict[str, tuple[tuple, type]], outputs: dict[str, tuple],
                 device_id: int, graph_id: int | None):
        self.sess, self.graph_id = sess, graph_id
        self.specs = {n: ((B, *shape), np.dtype(dtype)) for n, (shape, dtype) in inputs.items()}
        self.inputs = {n: ort.OrtValue.ortvalue_from_shape_and_type([B, *shape], dtype, "cuda", device_id)
                       for n, (shape, dtype) in inputs.items()}
        self.outputs = [ort.OrtValue.ortvalue_from_shape_and_type([B, *shape], np.float32, "cuda", device_id)
                        for shape in outputs.values()]
        self.binding = sess.io_binding()
        for n, v in self.inputs.items():
            self.binding.bind_ortvalue_input(n, v)
        for n, v in zip(outputs, self.outputs):
            self.binding.bind_ortvalue_output(n, v)
        self.run_options = ort.RunOptions()
        if graph_id is not None:
            self.run_options.add_run_config_entry("gpu_graph_id", str(graph_id))

    def __call__(self, feeds: dict[str, np.ndarray]) -> np.ndarray:
        for n, a in feeds.items():
            shape, dtype = self.specs[n]
            # update_inplace copies the OrtValue's byte length and checks only the element count: the dtype
            # and shape must be exactly the bound ones, or the device buffer would hold garbage
            a = np.ascontiguousarray(a, dtype=dtype)
            if a.shape != shape:
                raise ValueError(f"input {n} has shape {list(a.shape)}, expected {list(shape)}")
            self.inputs[n].update_inplace(a)
        self.binding.synchronize_inputs()  # pageable host copies must land before the (non-blocking) run
        self.sess.run_with_iobinding(self.binding, self.run_options)
        return self.outputs[0].numpy()


class OrtBackend:
    def __init__(self, bundle, device: str = "auto", threads: int = 0, precision: str = "auto"):
        import onnxruntime as ort  # loads with the first backend, not with the module

        self.ort = ort
        self.bundle = bundle
        self.notes: list[str] = []
        available = ort.get_available_providers()
        if device == "auto":
            device = "tensorrt" if "TensorrtExecutionProvider" in available else (
                "cuda" if "CUDAExecutionProvider" in available else "cpu")
        wanted = PROVIDERS[device]
        if wanted[0] not in available:
            raise BackendError(f"device {device!r} needs onnxruntime's {wanted[0]}, but this onnxruntime offers only "
                               f"{', '.join(available)} (install onnxruntime-gpu on a CUDA machine, or use --device cpu)")
        if precision not in ("auto", "float32", "float16"):
            raise BackendError(f"unknown precision {precision!r}; expected auto, float32 or float16")
        gpu = device != "cpu"
        if precision == "float16" and not gpu:
            raise BackendError("float16 graphs are for GPUs; on the CPU the float32 graphs are the fast ones")
        if precision == "float16" and not bundle.graphs_fp16:
            raise BackendError(f"bundle {bundle.root} has no float16 graphs (export it with --fp16)")
        # float16 denoiser (the guidance inside guided_eps stays float32: see export/graphs.py) where it pays
        self.precision = "float16" if gpu and bundle.graphs_fp16 and precision != "float32" else "float32"
        self.device = device
        self.device_id = 0
        so = self._so = cpu_session_options(ort, threads)
        self._threads = threads
        self._sessions = {}
        self._captured: set[str] = set()  # loop graphs that run as CUDA graphs
        version = tuple(int(p) for p in ort.__version__.split(".")[:2] if p.isdigit())
        can_capture = device == "cuda" and version >= CUDA_GRAPH_MIN_ORT
        if device == "cuda" and not can_capture:
            self.notes.append(f"CUDA graphs need onnxruntime-gpu >= {'.'.join(map(str, CUDA_GRAPH_MIN_ORT))}; "
                              f"this is {ort.__version__}: running without them")
        for name in RUNTIME_GRAPHS:
            path = self._graph_path(name)
            graph_capture = can_capture and name in LOOP_GRAPHS
            sess = self._session(path, so, wanted, graph_capture)
            if sess is None:  # the CUDA provider refused to capture this graph: run it without CUDA graphs
                sess = self._session(path, so, wanted, False)
                self.notes.append(f"{name}: onnxruntime refused CUDA graphs for this graph (typically nodes placed "
                                  "outside the CUDA provider); running without them")
            elif graph_capture:
                self._captured.add(name)
            self._check_declared(name, path, sess)
            got = sess.get_providers()
            if got[0] != wanted[0]:
                raise BackendError(f"onnxruntime could not start {wanted[0]} for the {name} graph (it fell back to "
                                   f"{got[0]}); check the CUDA libraries, or use --device cpu")
            self._sessions[name] = sess
        self._bound: OrderedDict = OrderedDict()
        # the bound device buffers are shared, and a capture must not overlap other work: one GPU call at a time
        self._lock = threading.Lock()
        self._graph_ids = 0
        self._provider = wanted[0]
        self._stream_session = None  # created by the first stream_encode
        self._set_name()

    def _set_name(self) -> None:
        extras = ""
        if self.device != "cpu":
            extras = f"; {self.precision}, I/O binding" + (", CUDA graphs" if self._captured else "")
        self.name = f"onnxruntime {self.ort.__version__} ({self._provider}{extras})"

    def _check_declared(self, name: str, path: Path, sess) -> None:
        """The ONNX file must be the graph the manifest declares: same input/output names, ranks and fixed dims."""
        spec = self.bundle.graphs[name]
        for side, got, want in (("inputs", sess.get_inputs(), spec.inputs), ("outputs", sess.get_outputs(), spec.outputs)):
            g = [(a.name, [d if isinstance(d, int) else "batch" for d in a.shape]) for a in got]
            w = [(d["name"], [x if isinstance(x, int) else "batch" for x in d["shape"]]) for d in want]
            if g != w:
                raise BundleError(f"{path.name} is not the declared {name} graph: its {side} are {g}, the manifest "
                                  f"declares {w}")

    def _graph_path(self, name: str) -> Path:
        b = self.bundle
        graphs = b.graphs_fp16 if self.precision == "float16" and name in b.graphs_fp16 else b.graphs
        if name not in graphs:
            raise BackendError(f"bundle {b.root} has no {name} graph")
        return b.path(graphs[name])

    def _session(self, path, so, wanted, graph_capture):
        ort = self.ort
        providers = []
        for p in wanted:
            if p == "TensorrtExecutionProvider":
                cache = engine_cache_dir()
                cache.mkdir(parents=True, exist_ok=True)
                providers.append((p, {"trt_engine_cache_enable": True, "trt_engine_cache_path": str(cache),
                                      "trt_fp16_enable": self.precision == "float16"}))
            elif p == "CUDAExecutionProvider":
                opts = {"device_id": self.device_id}
                if graph_capture:
                    opts["enable_cuda_graph"] = "1"
                providers.append((p, opts))
            else:
                providers.append(p)
        try:
            return ort.InferenceSession(str(path), so, providers=providers)
        except Exception:
            if graph_capture:
                return None
            raise

    # ------------------------------------------------------------------------------------- calls
    def _run_loop_graph(self, name: str, feeds: dict[str, np.ndarray]) -> np.ndarray:
        if self.device == "cpu":  # InferenceSession.run is thread-safe
            return self._sessions[name].run(None, feeds)[0]
        with self._lock:
            return self._run_bound(name, feeds)

    def _run_bound(self, name: str, feeds: dict[str, np.ndarray]) -> np.ndarray:
        B = len(feeds["x_t"])
        key = (name, B)
        bound = self._bound.get(key)
        if bound is None:
            spec = self.bundle.graphs[name]
            inputs = {s["name"]: (tuple(s["shape"][1:]), np.int64 if s["dtype"] == "int64" else np.float32)
                      for s in spec.inputs}
            outputs = {s["name"]: tuple(s["shape"][1:]) for s in spec.outputs}
            graph_id = None
            if name in self._captured:
                # one captured graph per (graph, batch size), kept for the session's life (onnxruntime keeps
                # a captured graph until the session ends, so ids are never recycled); beyond MAX_CAPTURED
                # sizes, -1 runs without capture
                n_captured = sum(1 for k, b in self._bound.items() if k[0] == name and (b.graph_id or 0) > 0)
                if n_captured < MAX_CAPTURED:
                    self._graph_ids += 1
                    graph_id = self._graph_ids
                else:
                    graph_id = -1
            bound = _Bound(self.ort, self._sessions[name], B, inputs, outputs, self.device_id, graph_id)
            try:
                out = bound(feeds)  # the first run at this size (with CUDA graphs: the capture)
            except Exception as e:
                if name not in self._captured:
                    raise
                # capture failed at run time: this graph runs without CUDA graphs from now on
                self._captured.discard(name)
                self._set_name()
                self.notes.append(f"{name}: CUDA graph capture failed ({str(e).splitlines()[0][:120]}); "
                                  "running without CUDA graphs")
                self._sessions[name] = self._session(self._graph_path(name), self._so, PROVIDERS[self.device], False)
                for k in [k for k in self._bound if k[0] == name]:
                    del self._bound[k]
                return self._run_bound(name, feeds)
            self._bound[key] = bound
            evictable = [k for k, b in self._bound.items() if not (b.graph_id or 0) > 0]
            for k in evictable[: max(0, len(evictable) - MAX_UNCAPTURED)]:  # least recently used first
                del self._bound[k]
            return out
        self._bound.move_to_end(key)
        return bound(feeds)

    def encode(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        feeds = {"x": np.ascontiguousarray(x, dtype=np.float32)}
        if self.device == "cpu":
            mu, var = self._sessions["encoder"].run(None, feeds)
        else:
            with self._lock:  # never during another graph's capture
                mu, var = self._sessions["encoder"].run(None, feeds)
        return mu, var

    def stream_encode(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``encode`` for a pipeline whose own threads keep cores busy (``encode_video``: a reader thread
        decodes while the caller's converts frames). On the CPU it runs a second encoder session with the
        threads those two leave (``pipeline_threads``: one on a 2-core machine) that do not spin while idle:
        spinning threads would take the core the decoder needs (benchmarks/RESULTS.md). Elsewhere it is
        ``encode``."""
        if self.device != "cpu":
            return self.encode(x)
        if self._stream_session is None:
            with self._lock:
                if self._stream_session is None:
                    n, t = pipeline_threads(), self._threads or default_threads()
                    so = cpu_session_options(self.ort, min(n, t) if t else n)  # spinning off there
                    self._stream_session = self._session(self._graph_path("encoder"), so, PROVIDERS["cpu"], False)
        mu, var = self._stream_session.run(None, {"x": np.ascontiguousarray(x, dtype=np.float32)})
        return mu, var

    def denoise(self, x_t: np.ndarray, t: np.ndarray) -> np.ndarray:
        return self._run_loop_graph("denoiser", {"x_t": x_t, "t": t})

    def guided_eps(self, x_t, t, z, mask, scale) -> np.ndarray:
        return self._run_loop_graph("guided_eps", {"x_t": x_t, "t": t, "z": z, "mask": mask, "scale": scale})
