"""The evaluation's two protocols and its progress lines (train/evaluate.py), apart from the evaluation itself
so that train/run.py can check a configuration without importing it."""

from __future__ import annotations

import json
import sys
import threading
import time
from pathlib import Path

PROTOCOLS = ("quick", "full")

# The quick protocol (the end of a training run, unless eval_protocol is full): at most these held-out images,
# sampling steps, interpolation pairs and FID samples. A 20-step disks-small run spent 6 of its 6.3 minutes in the
# full protocol on 2 cores, half of that in the 100-step generation figures (benchmarks/RESULTS.md).
QUICK = {"n_test": 500, "steps": 25, "interp_pairs": 10, "fid_n": 200}


class Stages:
    """One line per finished stage of an evaluation, with its seconds, on ``log`` (stderr by default). While a
    stage named by ``begin`` runs, a ticker thread says how long it has taken so far whenever nothing was
    logged for ``quiet_s`` seconds, so that no stage is silent for longer than that."""

    def __init__(self, log=None, quiet_s: float = 10.0):
        self.clock = time.perf_counter
        self._out = log or (lambda s: print(s, file=sys.stderr, flush=True))
        self.t0 = self.t = self.last = self.clock()
        self.quiet_s, self.current = quiet_s, None
        self._lock, self._stop = threading.Lock(), threading.Event()
        self._ticker = None

    def log(self, line: str) -> None:
        with self._lock:
            self._out(line)
            self.last = self.clock()

    def begin(self, what: str) -> None:
        """Name the stage that starts now (the ticker's lines name it); ``done`` ends it."""
        self.current, self.t = what, self.clock()
        if self._ticker is None and self.quiet_s > 0:
            self._ticker = threading.Thread(target=self._tick, name="stages-ticker", daemon=True)
            self._ticker.start()

    def _tick(self) -> None:
        while not self._stop.wait(min(1.0, self.quiet_s / 4)):
            now = self.clock()
            if self.current is not None and now - self.last >= self.quiet_s:
                self.log(f"  {self.current}: {now - self.t:.0f} s so far")

    def done(self, what: str) -> None:
        now = self.clock()
        self.current = None
        self.log(f"  {what}: {now - self.t:.1f} s")
        self.t = now

    def close(self) -> None:
        """Stop the ticker (the evaluation's end)."""
        self.current = None
        self._stop.set()

    def total(self) -> float:
        return self.clock() - self.t0


def protocol_of(path: Path) -> str | None:
    """The protocol of the evaluation written at ``path`` (files from before protocols were recorded: full);
    None when there is none."""
    try:
        return json.loads(Path(path).read_text()).get("protocol", "full")
    except (OSError, ValueError):
        return None
