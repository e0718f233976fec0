"""What this CPU offers for bfloat16, read from ``/proc/cpuinfo`` (Linux), and the machine line every
benchmark prints: the CPU model, its bf16/AMX flags, and the process's peak resident memory.

bfloat16 runs natively where the CPU has AMX (``amx_bf16``: Intel Sapphire Rapids and later) or AVX512-BF16
(``avx512_bf16``: Intel Cooper Lake and later, AMD Zen 4 and later). Elsewhere a bf16 request runs float32
and says so in one line (``bf16_support``). Tests replace ``read_cpuinfo`` to play another CPU.
"""

from __future__ import annotations

import atexit
import os
import platform
import sys
import time

from sami_rt.hardware.cpus import usable_cpus

BF16_FLAGS = ("amx_bf16", "avx512_bf16")  # either one: bf16 dot products in hardware
SHOWN_FLAGS = ("avx2", "avx512f", "avx512_bf16", "amx_tile", "amx_bf16", "amx_fp16")


def read_cpuinfo() -> str:
    """The text of /proc/cpuinfo, or "" where there is none (not Linux)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            return f.read()
    except OSError:
        return ""


def _first(key: str, text: str) -> str | None:
    for line in text.splitlines():
        k, _, v = line.partition(":")
        if k.strip() == key:
            return v.strip()
    return None


def cpu_flags() -> set[str]:
    """The first processor's flags (``flags`` on x86, ``Features`` on Arm)."""
    text = read_cpuinfo()
    return set((_first("flags", text) or _first("Features", text) or "").split())


def cpu_model() -> str:
    text = read_cpuinfo()
    return _first("model name", text) or platform.processor() or platform.machine() or "unknown CPU"


def bf16_support() -> tuple[bool, str]:
    """(this CPU computes bfloat16 natively, a phrase saying with what or why not)."""
    have = [f for f in BF16_FLAGS if f in cpu_flags()]
    if have:
        return True, f"bf16 in hardware ({' and '.join(have)})"
    if not read_cpuinfo():
        return False, "no /proc/cpuinfo to show amx_bf16 or avx512_bf16"
    return False, "this CPU has neither AMX-BF16 nor AVX512-BF16 (no amx_bf16 or avx512_bf16 in /proc/cpuinfo)"


def flags_line() -> str:
    """``avx2 yes, avx512f yes, avx512_bf16 yes, amx_tile no, ...``"""
    flags = cpu_flags()
    return ", ".join(f"{f} {'yes' if f in flags else 'no'}" for f in SHOWN_FLAGS)


def peak_rss_mib() -> float:
    """This process's peak resident set size in MiB (ru_maxrss: KiB on Linux, bytes on macOS)."""
    try:
        import resource  # Unix only
    except ImportError:  # Windows
        return float("nan")
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / 2**20 if sys.platform == "darwin" else rss / 1024


def machine_line() -> str:
    """One line for a benchmark's header: CPU model, CPUs usable, bf16/AMX flags."""
    return f"CPU: {cpu_model()} ({usable_cpus()} usable CPUs); {flags_line()}"


def report_machine() -> None:
    """A benchmark's first line and its last (on stderr, so that a table or JSON on stdout stays clean): the
    machine (``machine_line``), the time and the load; at exit, the process's peak RSS and the load again."""
    def load() -> str:
        return f"{os.getloadavg()[0]:.2f}" if hasattr(os, "getloadavg") else "unknown"

    print(f"{machine_line()}; {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; load {load()}", file=sys.stderr,
          flush=True)
    atexit.register(lambda: print(f"peak RSS {peak_rss_mib():.0f} MiB; load {load()} at the end", file=sys.stderr,
                                  flush=True))
