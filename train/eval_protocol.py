"""The evaluation's two protocols and its progress lines (train/evaluate.py), apart from the evaluation itself
so that train/run.py can check a configuration without importing it."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

PROTOCOLS = ("quick", "full")

# The quick protocol (the end of a training run, unless eval_protocol is full): at most these held-out images,
# sampling steps, interpolation pairs and FID samples. A 20-step disks-small run spent 6 of its 6.3 minutes in the
# full protocol on 2 cores, half of that in the 100-step generation figures (benchmarks/RESULTS.md).
QUICK = {"n_test": 500, "steps": 25, "interp_pairs": 10, "fid_n": 200}


class Stages:
    """One line per finished stage of an evaluation, with its seconds, on ``log`` (stderr by default)."""

    def __init__(self, log=None):
        self.clock, self.log = time.perf_counter, log or (lambda s: print(s, file=sys.stderr, flush=True))
        self.t0 = self.t = self.clock()

    def done(self, what: str) -> None:
        now = self.clock()
        self.log(f"  {what}: {now - self.t:.1f} s")
        self.t = now

    def total(self) -> float:
        return self.clock() - self.t0


def protocol_of(path: Path) -> str | None:
    """The protocol of the evaluation written at ``path`` (files from before protocols were recorded: full);
    None when there is none."""
    try:
        return json.loads(Path(path).read_text()).get("protocol", "full")
    except (OSError, ValueError):
        return None
