"""Serving under load (issue 31): p50 and p99 latency of one-sample generate requests against the offered load
(requests per second), open loop and bounded, batched and unbatched, for each backend.

    python -m benchmarks.serve_load [--devices cpu openvino] [--rates 2 5 10 20 40] [--seconds 10]
                                   [--max-in-flight 64] [--batch 16] [--plot benchmarks/serve_load.png]

For each device (``--device`` of ``sami-rt serve``; ``openvino`` skipped where it is not installed) and each
mode (``unbatched``: max_batch_size 1; ``batched``: max_batch_size ``--batch``, 10 ms wait), one replica with
``--threads`` backend threads is served on a local Ray instance, then for each offered rate the client sends
requests at Poisson arrival times for ``--seconds`` seconds (open loop: the schedule does not wait for answers,
so a server that falls behind shows its queue in the latency). The load is bounded: at most ``--max-in-flight``
requests are outstanding; an arrival beyond that is shed (counted, not sent), and a request unanswered after
``--timeout`` seconds is an error. Latency runs from the request's scheduled arrival to its answer. Every
request asks for one sample (n=1, the model's default ddpm steps) guided by random latents.

Prints a Markdown table (offered and answered rates, p50 and p99 in ms, shed and failed requests) and plots
p50 and p99 against the offered load, one panel per mode (``--plot``; needs matplotlib).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import threading
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from benchmarks.serve_throughput import free_port, load


def post(url: str, body: bytes, timeout: float) -> None:
    req = urllib.request.Request(url + "/generate", data=body, method="POST",
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=timeout) as resp:
        resp.read()


def run_rate(url: str, rate: float, seconds: float, bound: int, timeout: float, D: int, rng) -> dict:
    """Open-loop Poisson arrivals at ``rate`` per second for ``seconds``: latencies (s) of the answered
    requests, counts of shed and failed ones."""
    arrivals = np.cumsum(rng.exponential(1.0 / rate, int(rate * seconds * 2) + 10))
    arrivals = arrivals[arrivals < seconds]
    bodies = [json.dumps({"n": 1, "seed": int(rng.integers(2**62)), "format": "npy",
                          "z": rng.standard_normal((1, D)).round(4).tolist()}).encode() for _ in arrivals]
    lat, failed, shed = [], [0], 0
    lock, in_flight = threading.Lock(), [0]

    def one(body, due):
        try:
            post(url, body, timeout)
            with lock:
                lat.append(time.perf_counter() - due)
        except Exception:  # noqa: BLE001 - timeouts and HTTP errors count as failed
            with lock:
                failed[0] += 1
        finally:
            with lock:
                in_flight[0] -= 1

    t0 = time.perf_counter()
    with ThreadPoolExecutor(bound) as pool:
        for body, a in zip(bodies, arrivals):
            due = t0 + a
            wait = due - time.perf_counter()
            if wait > 0:
                time.sleep(wait)
            with lock:
                if in_flight[0] >= bound:
                    shed += 1
                    continue
                in_flight[0] += 1
            pool.submit(one, body, due)
    span = time.perf_counter() - t0
    ms = np.asarray(lat) * 1e3
    return {"offered_rps": rate, "sent": len(bodies) - shed, "answered": len(lat), "answered_rps": len(lat) / span,
            "p50_ms": float(np.percentile(ms, 50)) if len(ms) else float("nan"),
            "p99_ms": float(np.percentile(ms, 99)) if len(ms) else float("nan"), "shed": shed, "failed": failed[0]}


def plot(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    modes = sorted({r["mode"] for r in rows})
    fig, axes = plt.subplots(1, len(modes), figsize=(6 * len(modes), 4.2), squeeze=False)
    for ax, mode in zip(axes[0], modes):
        for dev in sorted({r["device"] for r in rows}):
            rs = [r for r in rows if r["mode"] == mode and r["device"] == dev]
            x = [r["offered_rps"] for r in rs]
            line, = ax.plot(x, [r["p50_ms"] for r in rs], "o-", label=f"{dev} p50")
            ax.plot(x, [r["p99_ms"] for r in rs], "s--", color=line.get_color(), label=f"{dev} p99")
        ax.set(xlabel="offered load (requests/s, one sample each)", ylabel="latency (ms)", yscale="log",
               title=f"{mode}")
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle("sami-rt serve: latency against offered load (open loop)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--devices", nargs="+", default=["cpu", "openvino"])
    ap.add_argument("--precision", default="auto", help="--precision of the replicas (auto, f32, bf16)")
    ap.add_argument("--rates", type=float, nargs="+", default=[2, 5, 10, 20, 40])
    ap.add_argument("--seconds", type=float, default=10.0, help="length of each rate's run")
    ap.add_argument("--max-in-flight", type=int, default=64)
    ap.add_argument("--batch", type=int, default=16, help="max_batch_size of the batched mode")
    ap.add_argument("--threads", type=int, default=1, help="backend threads of the replica")
    ap.add_argument("--cpus", type=int, default=2)
    ap.add_argument("--timeout", type=float, default=60.0)
    ap.add_argument("--plot", type=Path, default=None)
    ap.add_argument("--json", type=Path, default=None)
    a = ap.parse_args(argv)

    import ray
    from ray import serve

    from sami_rt.backends.openvino import openvino_version
    from sami_rt.hardware.cpuinfo import machine_line, peak_rss_mib
    from sami_rt.runtime import Runtime, default_steps
    from sami_rt.scale.serve import build_app, start

    devices = [d for d in a.devices if d != "openvino" or openvino_version()]
    rt = Runtime(device="cpu", threads=1)
    D, steps = rt.latent_dim, default_steps(rt.bundle, "ddpm")
    print(f"start {time.strftime('%Y-%m-%d %H:%M:%S UTC', time.gmtime())}, load {load()}\n{machine_line()}", flush=True)
    ray.init(num_cpus=a.cpus, include_dashboard=False, logging_level="ERROR", log_to_driver=False)
    rows = []
    rng = np.random.default_rng(int.from_bytes(os.urandom(4), "little"))
    try:
        port = free_port()
        for dev in devices:
            for mode, batch in (("unbatched", 1), (f"batched (up to {a.batch})", a.batch)):
                app = build_app(device=dev, threads=a.threads, max_batch_size=batch, batch_wait_s=0.01,
                                precision=a.precision)
                url = start(app, "127.0.0.1", port)
                for _ in range(3):  # warm: the replica's first calls (OpenVINO compiled its batch ladder at start-up)
                    post(url, json.dumps({"n": 1, "format": "npy"}).encode(), a.timeout)
                for rate in a.rates:
                    r = {"device": dev, "mode": mode, **run_rate(url, rate, a.seconds, a.max_in_flight, a.timeout, D,
                                                                   rng), "load": load()}
                    rows.append(r)
                    print(f"{dev}, {mode}, {rate:g} rps offered: answered {r['answered_rps']:.1f}/s, p50 "
                          f"{r['p50_ms']:.0f} ms, p99 {r['p99_ms']:.0f} ms, shed {r['shed']}, failed {r['failed']} "
                          f"(load {r['load']})", flush=True)
                serve.delete("sami-rt")
    finally:
        serve.shutdown()
        ray.shutdown()
    print(f"\nend {time.strftime('%Y-%m-%d %H:%M:%S UTC', time.gmtime())}, load {load()}; client peak RSS "
          f"{peak_rss_mib():.0f} MiB")
    print(f"\none-sample requests (ddpm {steps} steps, random latents), one replica, {a.threads} backend thread(s), "
          f"Ray on {a.cpus} CPUs, {a.seconds:g} s per rate, at most {a.max_in_flight} in flight, precision "
          f"{a.precision}\n")
    print("| device | mode | offered req/s | answered req/s | p50 ms | p99 ms | shed | failed |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for r in rows:
        print(f"| {r['device']} | {r['mode']} | {r['offered_rps']:g} | {r['answered_rps']:.1f} | {r['p50_ms']:.0f} | "
              f"{r['p99_ms']:.0f} | {r['shed']} | {r['failed']} |")
    if a.json:
        a.json.write_text(json.dumps(rows, indent=2) + "\n")
    if a.plot:
        plot(rows, a.plot)
        print(f"plot -> {a.plot}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
