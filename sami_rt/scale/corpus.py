"""``sami-rt encode-corpus``: many videos (and folders of images, taken as the frames of one trajectory) encoded
into one ``.npz`` each in an output directory, with an index of what happened to each (``index.jsonl``).

The parts a distributed runner reuses are plain functions of plain data: ``make_items`` turns the command's
inputs into ``Item`` s (path, output name, settings), ``encode_item(runtime, item) -> (row, arrays)`` encodes
one without touching the output directory, ``write_output`` writes its arrays (deterministic bytes, renamed
into place), ``complete_row`` says whether an existing output is complete and still valid for its input, and
``run_corpus`` drives them in this process or a pool of spawned processes (``sami_rt.scale.pool``), one
model load per process. A failed input is a row of the index, never the end of the corpus.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from sami_rt.contract.bundle import manifest_digest, read_bundle, resolve_model
from sami_rt.errors import InputError, SamiError, VideoError
from sami_rt.media.files import atomic_write_bytes, write_npz
from sami_rt.media.images import IMAGE_EXTS, folder_videos, image_files
from sami_rt.media.outputs import check_output
from sami_rt.scale.pool import run_pool
from sami_rt.video.trajectory import VideoEncoding, angles, mean_angle

FORMAT = "sami-rt-corpus/1"  # the format tag every corpus output carries
INDEX = "index.jsonl"
ROW_KEYS = ("path", "output", "kind", "frames", "latent_curvature", "pixel_curvature", "latent_straightness",
            "pixel_straightness", "status", "error", "seconds")


@dataclass(frozen=True)
class Item:
    """One input of a corpus and how to encode it: everything a worker needs, picklable and JSON-able."""

    index: int  # position in the corpus (the index's row order)
    path: str  # as given (a list file's entries joined to the list's folder)
    output: str  # file name inside the output directory
    every: int = 1
    allow_luma: bool = True
    model_id: str = ""  # the bundle's fingerprint (``model_id``)

    def to_dict(self) -> dict:
        return asdict(self)


# ------------------------------------------------------------------------------------------------ inputs
def read_list(path: Path) -> list[str]:
    """A list file's entries: one path a line, blank lines and lines starting with '#' skipped, relative paths
    taken from the list file's folder."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise InputError(f"list file {path} cannot be read ({getattr(e, 'strerror', None) or e})") from None
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            out.append(os.path.normpath(line if os.path.isabs(line) else os.path.join(path.parent, line)))
    return out


def expand_inputs(inputs) -> tuple[list[str], int]:
    """The command's INPUTS as paths, in order: a ``.txt`` file is a list of paths (``read_list``; a list file
    that does not exist is an InputError), a folder without images but with videos its videos (sorted by
    name), anything else one input (a folder of images: one trajectory). Repeats of one file are taken once;
    also returns how many were dropped."""
    paths, seen, dropped = [], set(), 0
    for arg in inputs:
        p = Path(arg)
        if p.suffix.lower() == ".txt" and not p.is_dir():
            if not p.exists():
                raise InputError(f"list file {p} does not exist")
            entries = read_list(p)
        elif p.is_dir() and not any(f.suffix.lower() in IMAGE_EXTS for f in p.iterdir()) and folder_videos(p):
            entries = [os.path.normpath(str(f)) for f in folder_videos(p)]
        else:
            entries = [os.path.normpath(str(p))]
        for e in entries:
            key = os.path.abspath(e)
            if key in seen:
                dropped += 1
                continue
            seen.add(key)
            paths.append(e)
    return paths, dropped


def output_name(path: str) -> str:
    """A stable, collision-free file name for an input: its path with the separators as '__' (the last 80
    characters, file-name-safe), a dash and 10 hex digits of the SHA-256 of its absolute path, then .npz."""
    digest = hashlib.sha256(os.path.abspath(path).encode("utf-8", "surrogateescape")).hexdigest()[:10]
    parts = [q for q in Path(os.path.normpath(path)).parts if q not in (os.sep, "/", "..", ".")]
    stem = re.sub(r"[^A-Za-z0-9._-]", "_", "__".join(parts))[-80:].lstrip(".") or "input"
    return f"{stem}-{digest}.npz"


def model_id(model=None) -> str:
    """A bundle's fingerprint: 16 hex digits of its manifest's SHA-256 (the manifest holds every graph's
    checksum). Reads and validates the bundle: a bundle that cannot be used is a BundleError here."""
    return manifest_digest(read_bundle(resolve_model(model)).root)[:16]


def make_items(paths, every: int = 1, allow_luma: bool = True, model: str = "") -> list[Item]:
    return [Item(i, p, output_name(p), int(every), bool(allow_luma), model) for i, p in enumerate(paths)]


def input_stamp(path: str) -> str:
    """What says an input is unchanged: a file's size and mtime (ns); a folder's, those of its image files
    (their names, sizes and mtimes, hashed). OSError where it cannot be read."""
    p = Path(path)
    if not p.is_dir():
        st = p.stat()
        return f"{st.st_size}:{st.st_mtime_ns}"

    h = hashlib.sha256()
    for f in sorted(q for q in p.iterdir() if q.suffix.lower() in IMAGE_EXTS):
        st = f.stat()
        h.update(f"{f.name}\0{st.st_size}\0{st.st_mtime_ns}\n".encode("utf-8", "surrogateescape"))
    return "folder:" + h.hexdigest()[:32]


# ------------------------------------------------------------------------------------------------ encode
def _encode_folder(runtime, path: Path):
    """A folder's images, sorted by name (as ``encode FOLDER`` reads them), as the frames of a trajectory."""
    files = image_files(path)
    x = runtime.load_images(files)
    mu, var = runtime.encode(x)
    lat = angles(mu) if len(mu) >= 3 else np.zeros(0)
    pix = angles(x) if len(x) >= 3 else np.zeros(0)
    v = VideoEncoding(np.arange(len(mu)), mu, var, lat, pix, 0.0)
    return {**v.arrays(), "files": np.array([f.name for f in files])}


def _encode(runtime, item: Item) -> tuple[str, dict]:
    p = Path(item.path)
    if not p.exists():
        raise InputError(f"{p} does not exist")
    stamp = input_stamp(item.path)  # before reading: a change while encoding makes the next run redo it
    if p.is_dir():
        kind, arrays = "images", _encode_folder(runtime, p)
    elif p.suffix.lower() in IMAGE_EXTS:
        raise InputError(f"{p} is an image; a corpus takes videos and folders of images (put it in a folder)")
    else:
        kind = "video"
        v = runtime.encode_video(p, every=item.every, allow_luma=item.allow_luma)
        if v.stopped_at is not None:
            raise VideoError(f"{p} is truncated or damaged: decoding stopped at frame {v.stopped_at}, before the "
                             "end its container declares")
        arrays = v.arrays()
    meta = dict(format=FORMAT, input=os.path.abspath(item.path), stamp=stamp, model_id=item.model_id,
                every=item.every, allow_luma=item.allow_luma, kind=kind)
    return kind, {**meta, **arrays}


def one_sentence(e: BaseException) -> str:
    """An exception as one line: the project's own errors as they are, others with their type."""
    text = (str(e).strip().splitlines() or [""])[0]
    if isinstance(e, SamiError):
        return text
    return f"{type(e).__name__}: {text}" if text else type(e).__name__


def encode_item(runtime, item: Item) -> tuple[dict, dict | None]:
    """Encode one input with a ``Runtime``: (its index row, the arrays of its output file), or a failed row and
    None. Never raises for a bad input (KeyboardInterrupt and SystemExit pass); writes nothing."""
    t0 = time.perf_counter()
    try:
        kind, arrays = _encode(runtime, item)
    except Exception as e:  # noqa: BLE001 -- any input's failure is a row, never the corpus's end
        return make_row(item, "failed", time.perf_counter() - t0, error=one_sentence(e)), None
    return make_row(item, "ok", time.perf_counter() - t0, arrays, kind), arrays


def _num(x) -> float | None:
    x = float(x)
    return round(x, 6) if np.isfinite(x) else None


def _mean(mean_angle, curvature) -> float | None:
    m = mean_angle(np.asarray(curvature, dtype=np.float64))
    return None if m is None else round(m, 6)


def make_row(item: Item, status: str, seconds: float, arrays: dict | None = None, kind: str | None = None,
             error: str | None = None) -> dict:
    """An index row: the input, its output (None unless written), what it holds, status, error, seconds."""
    row = dict.fromkeys(ROW_KEYS)
    row.update(path=item.path, kind=kind, status=status, error=error, seconds=round(seconds, 4))
    if arrays is not None:
        row.update(output=item.output, frames=int(len(arrays["frames"])),
                   latent_curvature=_mean(mean_angle, arrays["latent_curvature"]),
                   pixel_curvature=_mean(mean_angle, arrays["pixel_curvature"]),
                   latent_straightness=_num(arrays["latent_straightness"]),
                   pixel_straightness=_num(arrays["pixel_straightness"]))
    return row


# ------------------------------------------------------------------------------------------------ output
def write_output(out_dir, item: Item, arrays: dict) -> None:
    """The item's arrays under its final name, written to a temporary file first, with the same bytes for
    the same arrays (``sami_rt.media.files.write_npz``)."""
    write_npz(Path(out_dir) / item.output, **arrays)


def process_item(runtime, item: Item, out_dir) -> dict:
    """``encode_item`` and ``write_output``: the row (failed where the output could not be written)."""
    row, arrays = encode_item(runtime, item)
    if arrays is not None:
        try:
            write_output(out_dir, item, arrays)
        except OSError as e:
            row.update(status="failed", output=None, error=f"cannot write {Path(out_dir) / item.output} "
                       f"({e.strerror or e})")
    return row


def complete_row(out_dir, item: Item) -> dict | None:
    """A 'skipped' row when the item's output is complete and valid: it opens and every array reads, it
    carries the format tag, this input's absolute path, its size and mtime as they are now (a folder: its
    images'), and the same model and settings. None otherwise (the item is encoded again)."""
    path = Path(out_dir) / item.output
    t0 = time.perf_counter()
    try:
        with np.load(path, allow_pickle=False) as z:
            a = {k: z[k] for k in z.files}
        want = dict(format=FORMAT, input=os.path.abspath(item.path), stamp=input_stamp(item.path),
                    model_id=item.model_id, every=item.every, allow_luma=item.allow_luma)
        if any(k not in a or a[k].shape != () or a[k].item() != v for k, v in want.items()):
            return None
        return make_row(item, "skipped", time.perf_counter() - t0, a, str(a["kind"]))
    except Exception:  # noqa: BLE001 -- missing, truncated, not an archive, a key missing: encode it again
        return None


# ------------------------------------------------------------------------------------------------- index
class IndexWriter:
    """``index.jsonl``: the rows finished so far, in input order, rewritten atomically after each finished row
    (after every few when the rewrites would take more than a tenth of the run) and at the end."""

    def __init__(self, path: Path, n: int):
        self.path, self.rows = Path(path), [None] * n
        self.last_end = self.cost = 0.0

    def add(self, index: int, row: dict) -> None:
        self.rows[index] = row
        if time.perf_counter() - self.last_end >= 9 * self.cost:
            self.write()

    def write(self) -> None:
        t0 = time.perf_counter()
        atomic_write_bytes(self.path, "".join(json.dumps(r) + "\n" for r in self.rows if r is not None).encode())
        self.last_end = time.perf_counter()
        self.cost = self.last_end - t0


def read_index(path) -> list[dict]:
    return [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]


def check_out_dir(out_dir) -> Path:
    """The output directory can be created and written (``sami_rt.media.outputs.check_output`` on its index);
    InputError, one line, otherwise."""
    p = Path(out_dir)
    if p.exists() and not p.is_dir():
        raise InputError(f"-o {p} is a file; encode-corpus writes one .npz per input and {INDEX} into a directory")
    check_output(p / INDEX, "-o")
    return p


Progress = Callable[[int, int, dict], None]


def run_corpus(items: list[Item], out_dir, workers: int | None = 1, model=None, device: str = "auto",
               progress: Progress | None = None, work: Callable = process_item, runtime=None,
               ray: bool = False, address: str | None = None) -> list[dict]:
    """Encode every item whose output is not complete and valid (``complete_row``) into ``out_dir``, with
    ``workers`` processes (1: this process, with ``runtime`` or a ``Runtime(model, device, threads=1)``), or
    with ``ray`` on ``workers`` Ray Data actors (None: the cluster's CPUs) of the cluster at ``address``
    (``sami_rt.scale.ray_data``); ``progress(k, n, row)`` after each finished item. Returns the rows in input order;
    ``index.jsonl`` holds them (and, while running, those finished so far). ``work(runtime, item, out_dir) ->
    row``: the per-item function (a module-level one, for the pool and Ray)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    index = IndexWriter(out_dir / INDEX, len(items))
    done = 0

    def finish(item: Item, row: dict) -> None:
        nonlocal done
        done += 1
        index.add(item.index, row)
        if progress is not None:
            progress(done, len(items), row)

    try:
        todo = []
        for it in items:
            row = complete_row(out_dir, it)
            if row is None:
                todo.append(it)
            else:
                finish(it, row)
        failed = lambda it, error: make_row(it, "failed", 0.0, error=error)  # noqa: E731
        if todo and ray:
            from sami_rt.scale.ray_data import run_ray  # optional: Ray

            run_ray(todo, str(out_dir), workers, model, device, work, finish, failed, address)
        elif todo and (workers or 1) <= 1:
            if runtime is None:
                from sami_rt.runtime import Runtime  # onnxruntime only where this process encodes

                runtime = Runtime(model, device, threads=1)
            for it in todo:
                finish(it, work(runtime, it, str(out_dir)))
        elif todo:
            run_pool(todo, str(out_dir), min(workers, len(todo)), model, device, work, finish, failed)
    finally:
        index.write()
    return [r for r in index.rows if r is not None]
