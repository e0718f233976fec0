"""The process pool of ``sami_rt.scale.corpus.run_corpus``: spawned processes, each loading the model once
(``Runtime(model, device, threads=1)``) and running the per-item function on the items sent to it.

At most one item per process is in flight, so when a process dies (a decoder's crash on a damaged file), the
items that may have killed it are known: they are run again one at a time in a one-process pool, and one that
kills that too is a failed row. The other items go on in a fresh pool. A model that a worker cannot open
stops the corpus (it is not an input's fault) with the worker's one-line reason.
"""

from __future__ import annotations

import multiprocessing as mp
from collections import deque
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from typing import Callable

from sami_rt.errors import BackendError, SamiError

DIED = "the worker process died while encoding it (a crash in the decoder or the backend)"

_runtime = None  # the worker's model, loaded once by _init
_init_error: str | None = None


def _one_line(e: BaseException) -> str:
    text = (str(e).strip().splitlines() or [""])[0]
    return text if isinstance(e, SamiError) else f"{type(e).__name__}: {text}"


class _InitFailed(RuntimeError):
    """A worker could not open the model (the reason, one line)."""


def _init(model, device: str) -> None:
    global _runtime, _init_error
    try:
        from sami_rt.runtime import Runtime  # in the worker process that uses it

        _runtime = Runtime(model, device, threads=1)
    except Exception as e:  # noqa: BLE001 -- said by the first item it is given, then the driver stops
        _init_error = _one_line(e)


def _call(work: Callable, item, out_dir: str) -> dict:
    if _init_error is not None:
        raise _InitFailed(_init_error)
    return work(_runtime, item, out_dir)


def _until_broken(pending: deque, out_dir: str, workers: int, model, device: str, work: Callable,
                  finish: Callable, failed: Callable) -> list:
    """Run the pending items (taken from the left), at most ``workers`` in flight, on a fresh pool: [] when
    all are done; the items in flight when a worker died otherwise (those not yet sent stay in ``pending``)."""
    inflight: dict = {}
    ex = ProcessPoolExecutor(workers, mp_context=mp.get_context("spawn"), initializer=_init,
                             initargs=(model, device))
    try:
        while pending or inflight:
            while pending and len(inflight) < workers:
                item = pending.popleft()
                inflight[ex.submit(_call, work, item, out_dir)] = item
            ready, _ = wait(inflight, return_when=FIRST_COMPLETED)
            died = []
            for f in ready:
                item = inflight.pop(f)
                try:
                    row = f.result()
                except BrokenProcessPool:
                    died.append(item)
                    continue
                except _InitFailed as e:
                    raise BackendError(f"a worker could not open the model: {e}") from None
                except Exception as e:  # noqa: BLE001 -- the work function itself failed: this item's row
                    row = failed(item, _one_line(e))
                finish(item, row)
            if died:
                return died + list(inflight.values())
        return []
    finally:
        ex.shutdown(wait=not inflight, cancel_futures=True)


def run_pool(todo: list, out_dir: str, workers: int, model, device: str, work: Callable,
             finish: Callable[[object, dict], None], failed: Callable[[object, str], dict]) -> None:
    """Every item (``sami_rt.scale.corpus.Item``) of ``todo`` through ``work(runtime, item, out_dir)`` on ``workers``
    spawned processes; ``finish(item, row)`` in the order they finish; ``failed(item, error)``: a failed row."""
    pending = deque(todo)
    while pending:
        suspects = deque(_until_broken(pending, out_dir, workers, model, device, work, finish, failed))
        while suspects:  # one at a time: the one in flight when its process dies is the culprit
            for item in _until_broken(suspects, out_dir, 1, model, device, work, finish, failed):
                finish(item, failed(item, DIED))
