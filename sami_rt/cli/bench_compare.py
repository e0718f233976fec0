"""``sami-rt bench --compare``: every backend installed here side by side on the same inputs, per batch size,
``guided_eps`` and ``encoder`` calls interleaved (so that machine noise hits all alike), medians and ratios
against onnxruntime float32, and each one's largest difference from it. The entries: onnxruntime (float32;
its GPU providers where present), OpenVINO float32 and, where the CPU has AMX-BF16 or AVX512-BF16, bfloat16.
``python -m sami_reference.bench --compare`` adds the reference model in eager mode, float32 and bfloat16
(``extra``).
"""

from __future__ import annotations

import time
from typing import Callable

import numpy as np

from sami_rt.cli.benchmark import _interleaved
from sami_rt.contract.format import GRAPHS

Log = Callable[[str], None]


def installed_backends(bundle, threads: int = 0, log: Log = lambda s: None) -> dict[str, object]:
    """{label: backend} for every backend that opens here (float32 first, then bf16)."""
    from sami_rt.backends import BackendError, device_report, open_backend
    from sami_rt.hardware.cpuinfo import bf16_support

    wanted = [("onnxruntime cpu f32", "cpu", "f32")]
    usable = {name for name, ok, _ in device_report(bundle) if ok}
    wanted += [(f"onnxruntime {d} auto", d, "auto") for d in ("cuda", "tensorrt") if d in usable]
    if "openvino" in usable:
        wanted.append(("OpenVINO f32", "openvino", "f32"))
        if bf16_support()[0]:
            wanted.append(("OpenVINO bf16", "openvino", "bf16"))
    out = {}
    for label, device, precision in wanted:
        try:
            out[label] = open_backend(bundle, device, threads, precision)
        except BackendError as e:
            log(f"{label}: skipped ({e})")
    return out


def compare(bundle, backends: dict[str, object], batches, repeats: int, warmup: int,
            log: Log = lambda s: None) -> list[dict]:
    """Per batch and call: {label: stats} for each entry, ``ratio`` (onnxruntime f32's median / its own: above
    1 is faster) and ``max_rel_diff`` (its largest difference from the first entry, over that entry's range)."""
    rng = np.random.default_rng()
    first = next(iter(backends))
    rows = []
    for B in batches:
        g = GRAPHS["guided_eps"].example_inputs(rng, B, bundle.manifest.dims, bundle.manifest.T)
        x0 = GRAPHS["encoder"].example_inputs(rng, B, bundle.manifest.dims, bundle.manifest.T)["x"]
        args = (g["x_t"], g["t"], g["z"], g["mask"], g["scale"])
        for call, fn in (("guided_eps", lambda be: be.guided_eps(*args)), ("encoder", lambda be: be.encode(x0)[0])):
            log(f"compare: {call}, batch {B}")
            ref = fn(backends[first])
            diffs = {k: float(np.abs(fn(be) - ref).max() / max(np.abs(ref).max(), 1e-12)) for k, be in backends.items()}
            stats = _interleaved({k: (lambda be=be: fn(be)) for k, be in backends.items()}, repeats, warmup, settle=True)
            base = stats[first]["median_ms"]
            rows.append({"batch": B, "call": call, "entries": {
                k: {**s, "ratio": base / s["median_ms"], "max_rel_diff": diffs[k]} for k, s in stats.items()}})
    return rows


def run_compare(rt, batches, repeats: int, warmup: int, threads: int = 0, extra: dict | None = None,
                log: Log = lambda s: None) -> dict:
    from sami_rt.cli.benchmark import bench_meta
    from sami_rt.hardware.cpuinfo import peak_rss_mib

    backends = installed_backends(rt.bundle, threads, log)
    backends.update(extra or {})
    res = {"meta": bench_meta(rt, repeats, warmup), "compare": compare(rt.bundle, backends, batches, repeats,
                                                                       warmup, log)}
    res["meta"]["entries"] = {k: getattr(be, "name", k) for k, be in backends.items()}
    res["meta"]["peak_rss_mib"] = peak_rss_mib()
    return res


def format_compare(res: dict) -> str:
    m = res["meta"]
    labels = list(m["entries"])
    lines = [f"sami-rt bench --compare, {m['date']}; {m['cpu_line']}", ""]
    lines += [f"- {k}: {v}" for k, v in m["entries"].items()] + [""]
    head = "| batch | call | " + " | ".join(f"{k} ms" for k in labels) + " |"
    lines += [head, "|" + " --- |" * (head.count("|") - 1)]
    for r in res["compare"]:
        cells = [f"{r['entries'][k]['median_ms']:.2f}" + ("" if i == 0 else f" ({r['entries'][k]['ratio']:.2f}x, "
                                                           f"diff {r['entries'][k]['max_rel_diff']:.1e})")
                 for i, k in enumerate(labels)]
        lines.append(f"| {r['batch']} | {r['call']} | " + " | ".join(cells) + " |")
    lines += ["", f"(x: {labels[0]}'s median over the entry's; diff: largest difference from {labels[0]} over its "
              f"range); peak RSS {m['peak_rss_mib']:.0f} MiB; {time.strftime('%H:%M:%S')}"]
    return "\n".join(lines)
