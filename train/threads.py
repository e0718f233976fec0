"""CPU threads for training and evaluation: measured where it pays, not assumed.

PyTorch starts one intra-op thread per core. When another process holds one of the cores, every parallel
region waits for the thread that shares that core, and a step slows several-fold: a `disks-small` training
step took 2.3 s with 2 threads against 0.65 s with 1 on the 2-vCPU machine beside another job
(benchmarks/RESULTS.md, "Training beside a busy core"). On a quiet machine more threads are faster. So a run
that gives no ``--threads`` (and no ``OMP_NUM_THREADS``) times its own work, interleaved, with one thread
and with torch's default, and keeps the faster. Short runs, where the measurement would cost more than it
could save, take one thread without measuring. The count changes floating-point rounding, so a run records
it in its checkpoint and a resumed run keeps it (exact resume).
"""

from __future__ import annotations

import os
import time
from typing import Callable

import torch

MIN_WORK = 200  # steps (or batches) below which one thread is taken without measuring
ROUNDS = 3  # timed calls per candidate, interleaved; the median counts


def pinned() -> bool:
    """Whether the user fixed the count through the environment (torch reads OMP_NUM_THREADS at start)."""
    return bool(os.environ.get("OMP_NUM_THREADS", "").strip())


def measure(fn: Callable[[], object], candidates: list[int], rounds: int = ROUNDS) -> dict[int, float]:
    """Median seconds of ``fn()`` at each thread count, the counts interleaved round by round (after one
    warm-up call), so that a change of load touches every candidate alike. Restores torch's count."""
    prev = torch.get_num_threads()
    times: dict[int, list[float]] = {c: [] for c in candidates}
    try:
        torch.set_num_threads(candidates[0])
        fn()
        for _ in range(rounds):
            for c in candidates:
                torch.set_num_threads(c)
                t = time.perf_counter()
                fn()
                times[c].append(time.perf_counter() - t)
    finally:
        torch.set_num_threads(prev)
    return {c: sorted(v)[len(v) // 2] for c, v in times.items()}


def choose(fn: Callable[[], object], work: int, what: str = "step") -> tuple[int, str]:
    """(thread count, one line saying how it was chosen) for ``work`` more calls like ``fn``: torch's default
    where it is one thread, one thread for short work, else the faster of one thread and torch's default as
    ``measure`` times ``fn``. Sets nothing: the caller does (``torch.set_num_threads``)."""
    n = torch.get_num_threads()
    if n <= 1:
        return n, f"threads: {n}"
    if work < MIN_WORK:
        return 1, f"threads: 1 of {n} (short work, not measured; --threads N sets it)"
    t = measure(fn, [n, 1])
    best = min(t, key=t.get)
    return best, (f"threads: {best} of {n} (measured: {t[n] * 1e3:.0f} ms a {what} with {n}, {t[1] * 1e3:.0f} ms "
                  f"with 1; --threads N sets it)")
