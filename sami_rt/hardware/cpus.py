"""The CPUs this process may use, and the share left to work that runs beside the video pipeline's two threads
(the decoder's threads, the encoder session's)."""

from __future__ import annotations

import os


def usable_cpus() -> int:
    """CPUs this process may run on (its affinity mask, so a container's or taskset's limit counts)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # not Linux
        return max(1, os.cpu_count() or 1)


def pipeline_threads() -> int:
    """Threads for work that runs beside a two-thread pipeline (video: a reader and the caller): the CPUs
    left to it, at least one; capped at half the CPUs, since onnxruntime and FFmpeg scale with physical
    cores and hyper-threads add little for them."""
    n = usable_cpus()
    return max(1, min(n - 2, n // 2))
