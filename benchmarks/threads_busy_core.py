"""Training steps with one thread and with two, on a quiet machine and beside a process that holds one core
(issue 33: why train/threads.py measures rather than assumes).

    python -m benchmarks.threads_busy_core [--config disks-small] [--steps 6,26] [--rounds 2] [--threads 1,2]

Each cell runs ``train/run.py --config CONFIG --steps N --no-eval --threads T`` as its own process, at two run
lengths, and takes the difference of their wall times over the difference of their steps, so start-up and
the data set's rendering cancel; T = 0 runs with the default options (no ``--threads``: what a user gets),
and its whole wall time at the shorter length is reported too (issue 33's acceptance: a 6-step run beside a
busy core at most 2x its quiet time). The busy core is a child process spinning in a Python loop. Cells are
interleaved round by round and the median of the rounds counts. Prints the CPU, the load and a table.
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import tempfile
import time

from sami_rt.hardware.cpuinfo import report_machine


def cpu_name() -> str:
    return next((ln.split(":", 1)[1].strip() for ln in open("/proc/cpuinfo") if ln.startswith("model name")),
                platform.machine())


def run_once(config: str, steps: int, threads: int, out: str) -> float:
    env = {k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"}
    cmd = [sys.executable, "train/run.py", "--config", config, "--steps", str(steps), "--no-eval", "--out", out]
    if threads:
        cmd += ["--threads", str(threads)]
    t = time.perf_counter()
    subprocess.run(cmd, check=True, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", default="disks-small")
    ap.add_argument("--steps", default="6,26", help="two run lengths (the per-step time is their difference)")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--threads", default="1,2", help="thread counts to time (0: the default options)")
    args = ap.parse_args()
    report_machine()
    counts = [int(t) for t in args.threads.split(",")]
    short, long_ = (int(s) for s in args.steps.split(","))
    print(f"cpu: {cpu_name()}; {os.cpu_count()} logical CPUs; load {os.getloadavg()[0]:.2f} at the start")
    cells = [(busy, t) for busy in (False, True) for t in counts]
    per_step: dict[tuple[bool, int], list[float]] = {c: [] for c in cells}
    whole: dict[tuple[bool, int], list[float]] = {c: [] for c in cells}
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(args.rounds):
            for busy, t in cells:
                spinner = subprocess.Popen([sys.executable, "-c", "while True: pass"]) if busy else None
                try:
                    a = run_once(args.config, short, t, f"{tmp}/s{r}{t}{busy}")
                    b = run_once(args.config, long_, t, f"{tmp}/l{r}{t}{busy}")
                finally:
                    if spinner is not None:
                        spinner.kill()
                        spinner.wait()
                per_step[(busy, t)].append((b - a) / (long_ - short))
                whole[(busy, t)].append(a)
                print(f"round {r}: busy core {busy}, {t or 'default'} thread(s): {short} steps {a:.1f} s, {long_} steps "
                      f"{b:.1f} s", flush=True)
    print(f"load {os.getloadavg()[0]:.2f} at the end\n")
    med = lambda v: sorted(v)[len(v) // 2]  # noqa: E731
    name = {t: f"--threads {t}" if t else "default options" for t in counts}
    print(f"| {args.config} | " + " | ".join(f"step, {name[t]} | {short}-step run, {name[t]}" for t in counts) + " |")
    print("| --- |" + " --- | --- |" * len(counts))
    for busy in (False, True):
        print(f"| {'beside a busy core' if busy else 'quiet'} | " + " | ".join(
            f"{med(per_step[(busy, t)]):.2f} s | {med(whole[(busy, t)]):.1f} s" for t in counts) + " |")
    print("| busy / quiet | " + " | ".join(
        f"{med(per_step[(True, t)]) / med(per_step[(False, t)]):.2f}x | {med(whole[(True, t)]) / med(whole[(False, t)]):.2f}x"
        for t in counts) + " |")


if __name__ == "__main__":
    main()
