"""OpenVINO float32 against onnxruntime float32 on a bundle's guided_eps at batch 16 and 64, under OpenVINO CPU
property variants (issue 31's f32 target): each variant compiled at a static shape, with the backend's weight
unsharing, 2 threads; 15 interleaved rounds after two untimed calls each; medians and the ratio to
onnxruntime (> 1: faster than onnxruntime).

    python benchmarks/ov_f32_config.py [MODEL]      # default disks-small; needs the [openvino] extra
"""

import sys
import time

import numpy as np
import onnxruntime as ort
import openvino as ov

from sami_rt.backends.openvino import unshare_constants
from sami_rt.contract.bundle import read_bundle
from sami_rt.hardware.cpuinfo import report_machine
from sami_rt.runtime import shipped_models

report_machine()
m = sys.argv[1] if len(sys.argv) > 1 else "disks-small"
b = read_bundle(shipped_models()[m])
path = str(b.path(b.graphs["guided_eps"]))
rng = np.random.default_rng(3)
so = ort.SessionOptions()
so.intra_op_num_threads = 2
so.add_session_config_entry("session.intra_op.allow_spinning", "0")
sess = ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])
core = ov.Core()
variants = {
    "base": {},
    "denormals": {"CPU_DENORMALS_OPTIMIZATION": True},
    "throughput1": {"PERFORMANCE_HINT": "THROUGHPUT", "NUM_STREAMS": 1},
    "pinning": {"ENABLE_CPU_PINNING": True},
}
for B in (16, 64):
    D = b.manifest.latent_dim
    feeds = {
        "x_t": rng.standard_normal((B, 1, 32, 32)).astype(np.float32),
        "t": rng.integers(0, 400, B).astype(np.int64),
        "z": rng.standard_normal((B, D)).astype(np.float32),
        "mask": np.ones((B, D), np.float32),
        "scale": np.full((B,), 3.0, np.float32),
    }
    feeds = {
        i.name: feeds[i.name].astype(np.float32 if i.type == "tensor(float)" else np.int64) for i in sess.get_inputs()
    }
    comp = {}
    for k, extra in variants.items():
        model = core.read_model(path)
        unshare_constants(model, ov)
        model.reshape({n: list(a.shape) for n, a in feeds.items()})
        cfg = {
            "PERFORMANCE_HINT": "LATENCY",
            "INFERENCE_PRECISION_HINT": "f32",
            "ENABLE_CPU_PINNING": False,
            "INFERENCE_NUM_THREADS": 2,
        }
        cfg.update(extra)
        comp[k] = core.compile_model(model, "CPU", cfg).create_infer_request()
    runs = {"ort": lambda: sess.run(None, feeds)} | {k: (lambda r=r: r.infer(feeds)) for k, r in comp.items()}
    ts = {k: [] for k in runs}
    for f in runs.values():
        f()
        f()
    for _ in range(15):
        for k, f in runs.items():
            t0 = time.perf_counter()
            f()
            ts[k].append(time.perf_counter() - t0)
    o = np.median(ts["ort"])
    print(
        f"B={B}: " + ", ".join(f"{k} {np.median(v)*1e3:.2f} ms ({o/np.median(v):.2f}x)" for k, v in ts.items()),
        flush=True,
    )
