"""``sami-rt encode-corpus --ray``: the corpus's items on a Ray cluster through Ray Data (the ``[ray]`` extra).

The driver decides what to do (``sami_rt.scale.corpus.run_corpus`` skips complete outputs before this is called) and
keeps the index; Ray Data runs ``process_item`` on the rest in a pool of actors, each opening the model once
(``Runtime(model, device, threads=1)``, as the local pool's processes do), and each writing its outputs into the
output directory itself (on a cluster: a path every node shares). Every item is its own block and at most one
is in flight per actor, so items finish and report one by one, and an actor that dies (a decoder's crash on a
damaged file) takes only the item it held: that item is a failed row, not retried (Ray Data's default would
retry it forever), and the actor is restarted for the others; an item whose work raises is a failed row with
that error, as in the pool. Actors work in the driver's working directory where their node has it, so
relative inputs and models mean what they mean to the command. ``--device auto`` is the CPU on Ray (every
node then gives the same bytes); cuda and tensorrt reserve a GPU per actor. The outputs are the local
pool's, byte for byte: the same function, model and thread count.
"""

from __future__ import annotations

import json
import logging
import os
import warnings
from typing import Callable

import numpy as np

from sami_rt.errors import BackendError
from sami_rt.scale.pool import DIED, _one_line  # the local pool's words, so the rows match
from sami_rt.scale.ray_util import connect, quiet_ray_core

GPU_DEVICES = ("cuda", "tensorrt")  # actors on these reserve one GPU each


class EncodeActor:
    """One Ray Data actor: the model, opened once; a batch of JSON-encoded items in, their JSON rows out."""

    def __init__(self, model, device: str, out_dir: str, work: Callable, item_type: type, cwd: str):
        if os.path.isdir(cwd):  # relative inputs and --model resolve as in the driver (a shared file system)
            os.chdir(cwd)
        self.out_dir, self.work, self.item_type = out_dir, work, item_type
        self.runtime, self.init_error = None, None
        try:
            from sami_rt.runtime import Runtime  # in the Ray actor that uses it

            self.runtime = Runtime(model, device, threads=1)
        except Exception as e:  # noqa: BLE001 -- reported by the rows, then the driver stops the corpus
            self.init_error = _one_line(e)

    def __call__(self, batch: dict) -> dict:
        rows = []
        for text in batch["item"]:
            d = json.loads(str(text))
            if self.init_error is not None:
                rows.append(json.dumps({"index": d["index"], "init_error": self.init_error}))
                continue
            try:
                res = {"row": self.work(self.runtime, self.item_type(**d), self.out_dir)}
            except Exception as e:  # noqa: BLE001 -- the work function failed: this item's row, as in the pool
                res = {"error": _one_line(e)}
            rows.append(json.dumps({"index": d["index"], **res}))
        return {"result": np.array(rows, dtype=object)}


def run_ray(todo: list, out_dir: str, workers: int | None, model, device: str, work: Callable,
            finish: Callable[[object, dict], None], failed: Callable[[object, str], dict],
            address: str | None = None) -> None:
    """Every item of ``todo`` through ``work(runtime, item, out_dir)`` on Ray Data actors (``workers`` of them;
    None: the cluster's CPUs, at most the items); ``finish(item, row)`` as rows arrive; ``failed(item, why)``
    makes the row of an item whose work raised or whose actor died. ``device`` auto is the CPU here (the same
    bytes on every node); cuda and tensorrt reserve one GPU per actor (default ``workers``: the GPUs)."""
    with quiet_ray_core():
        _run_ray(connect(address, "--ray"), todo, out_dir, workers, model, device, work, finish, failed)


def _run_ray(connected, todo, out_dir, workers, model, device, work, finish, failed) -> None:
    ray, started = connected
    try:
        from ray.data import ActorPoolStrategy, DataContext  # optional: Ray

        logging.getLogger("ray.data").setLevel(logging.ERROR)  # its notices are not the user's business
        ctx = DataContext.get_current()
        ctx.enable_progress_bars = False  # the command prints a line per finished input itself
        ctx.print_on_execution_start = False
        ctx.max_errored_blocks = len(todo)  # an actor's death fails its item's block, never the corpus
        if workers is None:
            workers = max(1, int(ray.cluster_resources().get("GPU" if device in GPU_DEVICES else "CPU", 1)))
        workers = max(1, min(workers, len(todo)))
        by_index = {it.index: it for it in todo}
        ds = ray.data.from_items([{"item": json.dumps(it.to_dict())} for it in todo],
                                 override_num_blocks=len(todo))
        with warnings.catch_warnings():  # Ray 2.60 has no other way to turn task retries off (setup.py: <2.64)
            warnings.filterwarnings("ignore", "`ray_remote_args` is deprecated", DeprecationWarning)
            ds = ds.map_batches(EncodeActor, batch_size=1, batch_format="numpy", num_cpus=1,
                                num_gpus=1 if device in GPU_DEVICES else None,
                                compute=ActorPoolStrategy(size=workers, max_tasks_in_flight_per_actor=1),
                                fn_constructor_args=(None if model is None else str(model),
                                                     "cpu" if device == "auto" else device,
                                                     os.path.abspath(out_dir), work, type(todo[0]), os.getcwd()),
                                max_restarts=-1, max_task_retries=0)
        for rec in ds.iter_rows():
            res = json.loads(str(rec["result"]))
            if "init_error" in res:
                raise BackendError(f"a Ray worker could not open the model: {res['init_error']}")
            item = by_index.pop(res["index"])
            finish(item, res["row"] if "row" in res else failed(item, res["error"]))
        for it in sorted(by_index.values(), key=lambda it: it.index):  # blocks that errored: the actor died
            finish(it, failed(it, DIED))
    finally:
        if started:
            ray.shutdown()
