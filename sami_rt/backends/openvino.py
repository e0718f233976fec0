"""OpenVINO backend (``--device openvino``): the bundle's ONNX graphs as they are, compiled for the CPU by
OpenVINO, in float32 or, where the CPU has AMX-BF16 or AVX512-BF16 and it is asked for, bfloat16.

Each graph is compiled per input shape: a static shape compiles once (0.2-0.5 s for disks-small) and runs
faster than a dynamic one. Batch sizes are rounded up to a ladder (1, 2, 3, 4, 6, 8, 12, 16, 24, ...: at most
1.5x the rows asked for, ``batch_bucket``), the extra rows copies of the last one and dropped from the output,
so that a server whose batches take every size from 1 to 16 compiles 8 shapes, not 16 (each compile stalls
the requests behind it: benchmarks/RESULTS.md, issue 31). The compiled models are kept, least recently used
evicted beyond ``MAX_COMPILED`` shapes per graph, so a repeated shape never recompiles (``compiles`` counts
them); ``warm_up`` compiles the ladder up to a batch size ahead of time (``sami-rt serve`` does, at start-up).
Each graph read (``prepare_graph``) gets every weight constant read by more than one node copied per reader
(``unshare_constants``, the cure for an OpenVINO fault), and every mean over both spatial axes (GroupNorm's
per-channel statistics, export/graphs.py) computed as an average pooling (``pool_spatial_means``: the same
values; OpenVINO runs a pooling faster than a ReduceMean on its channels-last activations, a guided step 10%
faster). Every compile states its inference precision: OpenVINO's own default on a CPU with bf16 is bf16,
which would change the samples' rounding without being asked. Calls are thread-safe: each compiled model keeps
a pool of infer requests, one per concurrent caller.
"""

from __future__ import annotations

import os
import threading
from collections import OrderedDict
from pathlib import Path

import numpy as np

from sami_rt.backends.openvino_check import check_bundle
from sami_rt.backends.precision import cpu_precision
from sami_rt.contract.bundle import BundleError
from sami_rt.contract.format import RUNTIME_GRAPHS
from sami_rt.errors import BackendError

INSTALL = 'pip install "sami-rt[openvino]"'
MAX_COMPILED = 16  # shapes per graph kept compiled
OV_TYPES = {"float32": "f32", "bfloat16": "bf16"}


def import_openvino():
    """The openvino module, or a BackendError naming the install command (one line)."""
    try:
        import openvino  # optional: the [openvino] extra
    except ImportError:
        raise BackendError(f"device 'openvino' is not available here: OpenVINO is not installed ({INSTALL}); "
                           "use --device cpu") from None
    return openvino


def openvino_version() -> str | None:
    try:
        from importlib.metadata import version  # read only when asked

        return version("openvino")
    except Exception:  # not installed
        return None


def default_ov_threads() -> int:
    v = os.environ.get("OMP_NUM_THREADS", "").strip()
    return int(v) if v.isdigit() and int(v) > 0 else 0


def compile_config(precision: str, threads: int) -> dict:
    """OpenVINO CPU properties, chosen by measurement (benchmarks/RESULTS.md, issue 31): the latency hint (one
    stream: the loop makes one call at a time), the precision stated, and the thread count when given; no
    pinning of threads to cores, which on a shared machine (the test suite's workers, serving replicas)
    would put several processes' threads on the same cores."""
    cfg = {"PERFORMANCE_HINT": "LATENCY", "INFERENCE_PRECISION_HINT": OV_TYPES[precision],
           "ENABLE_CPU_PINNING": False}
    if threads:
        cfg["INFERENCE_NUM_THREADS"] = int(threads)
    return cfg


class _Compiled:
    """One graph compiled at one shape, with a pool of infer requests (one per concurrent caller)."""

    def __init__(self, compiled, outputs: list[str]):
        self.compiled, self.outputs = compiled, outputs
        self._free: list = []
        self._lock = threading.Lock()

    def __call__(self, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        with self._lock:
            req = self._free.pop() if self._free else self.compiled.create_infer_request()
        try:
            req.infer(feeds)
            return [np.array(req.get_tensor(n).data, copy=True) for n in self.outputs]
        finally:
            with self._lock:
                self._free.append(req)


class OpenVinoBackend:
    device = "openvino"

    def __init__(self, bundle, threads: int = 0, precision: str = "auto", check: bool = True):
        ov = import_openvino()
        self.ov = ov
        self.bundle = bundle
        self.notes: list[str] = []
        self.precision, note = cpu_precision(precision)
        if note:
            self.notes.append(note)
        self.threads = threads or default_ov_threads()
        self.core = ov.Core()
        self._models = {}
        for name in RUNTIME_GRAPHS:
            if name not in bundle.graphs:
                raise BackendError(f"bundle {bundle.root} has no {name} graph")
            self._models[name] = self._read(name, bundle.path(bundle.graphs[name]))
        self._compiled: dict[str, OrderedDict] = {n: OrderedDict() for n in RUNTIME_GRAPHS}
        self._lock = threading.Lock()
        self.compiles = 0  # compile_model calls so far (the tests check the cache with it)
        version = openvino_version() or ov.__version__
        self.name = f"OpenVINO {version} (CPU, {self.precision}, {self.threads or 'default'} threads)"
        if check:  # once per bundle and OpenVINO version: its outputs against onnxruntime's (openvino_check.py)

            check_bundle(self, version)

    def _read(self, name: str, path: Path):
        """The ONNX graph read by OpenVINO, checked against the manifest's input and output names."""
        try:
            model = self.core.read_model(str(path))
        except Exception as e:  # OpenVINO's own error class per frontend
            raise BackendError(f"OpenVINO cannot read {path} ({str(e).splitlines()[0][:160]})") from None
        spec = self.bundle.graphs[name]
        got = ([sorted(i.get_names()) for i in model.inputs], [sorted(o.get_names()) for o in model.outputs])
        for side, names, want in (("inputs", got[0], spec.inputs), ("outputs", got[1], spec.outputs)):
            if len(names) != len(want) or any(d["name"] not in n for n, d in zip(names, want)):
                raise BundleError(f"{path.name} is not the declared {name} graph: its {side} are {names}, the "
                                  f"manifest declares {[d['name'] for d in want]}")
        prepare_graph(model, ov=self.ov)
        return model

    def compiled(self, name: str, feeds: dict[str, np.ndarray]) -> _Compiled:
        """The graph compiled for these inputs' shapes: from the cache, or compiled now (and kept)."""
        key = tuple(sorted((k, a.shape) for k, a in feeds.items()))
        cache = self._compiled[name]
        with self._lock:
            c = cache.get(key)
            if c is not None:
                cache.move_to_end(key)
                return c
            model = self._models[name].clone()
            model.reshape({n: list(a.shape) for n, a in feeds.items()})
            try:
                compiled = self.core.compile_model(model, "CPU", compile_config(self.precision, self.threads))
            except Exception as e:
                raise BackendError(f"OpenVINO could not compile the {name} graph at shape {list(key)} "
                                   f"({str(e).splitlines()[0][:160]})") from None
            self.compiles += 1
            c = cache[key] = _Compiled(compiled, [d["name"] for d in self.bundle.graphs[name].outputs])
            while len(cache) > MAX_COMPILED:
                cache.popitem(last=False)
            return c

    def warm_up(self, max_batch: int, graphs=RUNTIME_GRAPHS, log=None) -> int:
        """Compile ``graphs`` now at every ladder size up to ``batch_bucket(max_batch)`` (``batch_sizes``), so that
        no later call of up to ``max_batch`` rows stalls on a compile (a server's first requests). Only the
        shapes matter: the arrays are placeholders and nothing runs. Returns the number of compiles done."""
        before = self.compiles
        sizes = batch_sizes(max_batch)
        for i, B in enumerate(sizes, 1):
            for name in graphs:
                feeds = {d["name"]: np.zeros([B if dim == "batch" else dim for dim in d["shape"]],
                                             np.int64 if d["dtype"] == "int64" else np.float32)
                         for d in self.bundle.graphs[name].inputs}
                self.compiled(name, feeds)
            if log is not None:
                log(f"OpenVINO: compiled {', '.join(graphs)} at batch {B} ({i}/{len(sizes)})")
        return self.compiles - before

    def _run(self, name: str, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        B = len(next(iter(feeds.values())))
        Bp = batch_bucket(B)
        if Bp != B:
            feeds = {k: np.concatenate([a, np.repeat(a[-1:], Bp - B, axis=0)]) for k, a in feeds.items()}
        outs = self.compiled(name, feeds)(feeds)
        return outs if Bp == B else [o[:B] for o in outs]

    def encode(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        mu, var = self._run("encoder", {"x": np.ascontiguousarray(x, dtype=np.float32)})
        return mu, var

    def stream_encode(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return self.encode(x)

    def denoise(self, x_t: np.ndarray, t: np.ndarray) -> np.ndarray:
        return self._run("denoiser", _feeds(x_t=x_t, t=t))[0]

    def guided_eps(self, x_t, t, z, mask, scale) -> np.ndarray:
        return self._run("guided_eps", _feeds(x_t=x_t, t=t, z=z, mask=mask, scale=scale))[0]


def prepare_graph(model, ov=None) -> tuple[int, int]:
    """What the backend does to each graph OpenVINO reads, in place (benchmarks do the same to time what runs):
    ``unshare_constants`` and ``pool_spatial_means``; returns their counts."""
    return unshare_constants(model, ov=ov), pool_spatial_means(model, ov=ov)


def unshare_constants(model, ov=None) -> int:
    """Give every reader after the first of a weight constant (2 or more dimensions) its own copy, in place;
    returns the number of copies made. OpenVINO 2026.4.1's CPU plugin computes the second of two nodes that
    share a square weight constant (a Convolution and the ConvolutionBackpropData of its input gradient, a
    MatMul pair) with the first's prepared weights (sami_rt/backends/openvino_check.py). Every guidance graph
    reads each encoder weight twice, in the forward node and its input gradient, from one initializer (the
    export writes each weight once), so this runs on every graph read."""
    ov = ov or import_openvino()
    copies = 0
    for op in model.get_ordered_ops():
        if op.get_type_name() != "Constant" or len(op.get_output_shape(0)) < 2:
            continue
        readers = sorted(op.output(0).get_target_inputs(),
                         key=lambda i: (i.get_node().get_friendly_name(), i.get_index()))
        for inp in readers[1:]:
            inp.replace_source_output(ov.op.Constant(np.array(op.get_data(), copy=True)).output(0))
            copies += 1
    if copies:
        model.validate_nodes_and_infer_types()
    return copies


def pool_spatial_means(model, ov=None) -> int:
    """Replace every ReduceMean over both spatial axes of a 4-d input (N, C, H, W) of static H and W, keeping
    its dimensions, by an average pooling with the whole image as its window, in place; returns the number
    replaced (bundles exported before 2026-12-05 reduce reshaped 3-d activations instead, and keep theirs).
    The values are the same means; OpenVINO 2026.4.1's CPU plugin computes them as a pooling on its
    channels-last layout faster than as a reduction (disks-small's guided step at batch 16 and 64: 1.19-1.31x
    and 1.13-1.26x onnxruntime, against 1.14-1.18x and 1.05-1.12x without; benchmarks/RESULTS.md, issue 31).
    The ONNX graphs keep ReduceMean, which onnxruntime runs faster than a pooling."""
    ov = ov or import_openvino()
    replaced = 0
    for op in model.get_ordered_ops():
        if op.get_type_name() != "ReduceMean" or not op.get_attributes().get("keep_dims"):
            continue
        x = op.input_value(0)
        shape = x.get_partial_shape()
        axes = op.input_value(1).get_node()
        if shape.rank.is_dynamic or shape.rank.get_length() != 4 or axes.get_type_name() != "Constant":
            continue
        if sorted(int(a) % 4 for a in np.asarray(axes.get_data()).ravel()) != [2, 3]:
            continue
        if shape[2].is_dynamic or shape[3].is_dynamic:
            continue
        window = [shape[2].get_length(), shape[3].get_length()]
        pool = ov.opset1.avg_pool(x, [1, 1], [0, 0], [0, 0], window, True, "floor", "explicit")
        op.output(0).replace(pool.output(0))
        replaced += 1
    if replaced:
        model.validate_nodes_and_infer_types()
    return replaced


def batch_bucket(B: int) -> int:
    """The batch size compiled for B rows: B up to 4, else the smallest of 2^k and 3 * 2^(k-2) that holds B."""
    if B <= 4:
        return B
    p = 1 << (B - 1).bit_length()
    return 3 * p // 4 if 3 * p // 4 >= B else p


def batch_sizes(max_batch: int) -> list[int]:
    """The ladder's batch sizes that calls of 1..max_batch rows compile (the distinct ``batch_bucket`` values)."""
    return sorted({batch_bucket(B) for B in range(1, max(1, int(max_batch)) + 1)})


def _feeds(**arrays) -> dict[str, np.ndarray]:
    return {k: np.ascontiguousarray(v, dtype=np.int64 if k == "t" else np.float32) for k, v in arrays.items()}
