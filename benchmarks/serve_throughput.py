"""Issue 20's acceptance for ``sami-rt serve``: 64 concurrent generate requests to the served app, every
response equal to ``Runtime.generate`` with the same arguments, and the throughput batched against one request
at a time.

The app runs on a local Ray instance (``--cpus``, HTTP on 127.0.0.1), one replica with one backend thread.
Modes, each with the same 64 requests (random seeds; half guided by an image, half by explicit latents;
ddpm at the model's default steps unless ``--steps``):

- ``sequential``: one request in flight at a time (a client waiting for each answer);
- ``concurrent, batch 1``: all 64 in flight, the server answering one per backend call (max_batch_size 1);
- ``concurrent, batch B``: all 64 in flight, gathered into batches of up to B requests (``--batch-sizes``).

Every response of every mode is compared with ``Runtime.generate`` (exact equality of the float32 arrays).

    python benchmarks/serve_throughput.py                 # 64 requests of n=4, batch sizes 16 and 64
    python benchmarks/serve_throughput.py --requests 32 --n 2 --batch-sizes 8
"""

from __future__ import annotations

import argparse
import base64
import io
import json
import os
import socket
import sys
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from sami_rt.hardware.cpuinfo import report_machine

ROOT = Path(__file__).resolve().parent.parent
GUIDE = ROOT / "examples" / "guide.png"


def load() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def make_requests(count: int, n: int, steps: int | None, D: int, seed: int) -> list[tuple[dict, dict]]:
    """(JSON body, Runtime.generate arguments) of each request."""
    r = np.random.default_rng(seed)
    guide = base64.b64encode(GUIDE.read_bytes()).decode()
    out = []
    for k in range(count):
        body = {"n": n, "seed": int(r.integers(0, 2**63)), "format": "npy"}
        if steps is not None:
            body["steps"] = steps
        args = {key: body[key] for key in ("n", "seed", "steps") if key in body}
        if k % 2 == 0:
            body["guide"], args["guide"] = guide, str(GUIDE)
        else:
            z = r.standard_normal((n, D)).astype(np.float32)
            body["z"], args["z"] = z.tolist(), z
        out.append((body, args))
    return out


def post(url: str, body: dict, timeout: float) -> np.ndarray:
    req = urllib.request.Request(url + "/generate", data=json.dumps(body).encode(), method="POST",
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=timeout) as resp:
        return np.load(io.BytesIO(resp.read()), allow_pickle=False)


def run_mode(url, requests, concurrent: bool, timeout: float) -> tuple[float, list[np.ndarray]]:
    t0 = time.perf_counter()
    if concurrent:
        with ThreadPoolExecutor(len(requests)) as pool:
            xs = list(pool.map(lambda b: post(url, b[0], timeout), requests))
    else:
        xs = [post(url, b[0], timeout) for b in requests]
    return time.perf_counter() - t0, xs


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--requests", type=int, default=64)
    ap.add_argument("--n", type=int, default=4, help="samples per request")
    ap.add_argument("--steps", type=int, default=None, help="ddpm steps (default: the model's)")
    ap.add_argument("--batch-sizes", default="16,64", help="max_batch_size of the batched modes")
    ap.add_argument("--batch-wait-ms", type=float, default=10.0)
    ap.add_argument("--cpus", type=int, default=2)
    ap.add_argument("--seed", type=int, default=None)
    ap.add_argument("--timeout", type=float, default=300.0, help="seconds, each request")
    a = ap.parse_args(argv)
    report_machine()
    seed = a.seed if a.seed is not None else int.from_bytes(os.urandom(4), "little")

    import ray
    from ray import serve

    from sami_rt.runtime import Runtime, default_steps
    from sami_rt.scale.serve import build_app, start

    print(f"start {time.strftime('%Y-%m-%d %H:%M:%S %Z')}, load {load()}, seed {seed}", flush=True)
    rt = Runtime(device="cpu", threads=1)  # what the replica opens
    requests = make_requests(a.requests, a.n, a.steps, rt.latent_dim, seed)
    want = [rt.generate(**args).x for _, args in requests]
    steps = a.steps or default_steps(rt.bundle, "ddpm")
    modes = [("sequential", 1, False), ("concurrent, batch 1", 1, True)]
    modes += [(f"concurrent, batch {b}", int(b), True) for b in a.batch_sizes.split(",")]
    ray.init(num_cpus=a.cpus, include_dashboard=False, logging_level="ERROR", log_to_driver=False)
    rows, all_equal = [], True
    try:
        port = free_port()
        for name, batch, concurrent in modes:
            url = start(build_app(threads=1, max_batch_size=batch, batch_wait_s=a.batch_wait_ms / 1000), "127.0.0.1",
                        port)
            post(url, requests[0][0], a.timeout)  # warm: the replica's first call
            seconds, xs = run_mode(url, requests, concurrent, a.timeout)
            with urllib.request.urlopen(url + "/info", timeout=a.timeout) as resp:
                batches = json.loads(resp.read())["recent_batches"]
            equal = sum(np.array_equal(x, w) for x, w in zip(xs, want))
            all_equal &= equal == len(requests)
            rows.append((name, seconds, len(requests) / seconds, len(requests) * a.n / seconds, equal,
                         max(batches[1:] or [1])))
            print(f"{name}: {seconds:.2f} s, {rows[-1][2]:.2f} requests/s, {rows[-1][3]:.1f} samples/s, "
                  f"{equal}/{len(requests)} equal to Runtime.generate, largest batch {rows[-1][5]}", flush=True)
            serve.delete("sami-rt")
    finally:
        serve.shutdown()
        ray.shutdown()
    base = rows[0][1]
    print(f"\nend {time.strftime('%Y-%m-%d %H:%M:%S %Z')}, load {load()}")
    print(f"\n{a.requests} requests of n={a.n}, ddpm {steps} steps (half guided by examples/guide.png, half by "
          f"latents), one replica, one backend thread, batch wait {a.batch_wait_ms:g} ms\n")
    print("| mode | seconds | requests/s | samples/s | vs sequential | largest batch | equal to Runtime.generate |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for name, seconds, rps, sps, equal, largest in rows:
        print(f"| {name} | {seconds:.2f} | {rps:.2f} | {sps:.1f} | {base / seconds:.2f}x | {largest} | "
              f"{equal}/{a.requests} |")
    return 0 if all_equal else 1


if __name__ == "__main__":
    sys.exit(main())
