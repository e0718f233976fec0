"""Video encoding: per-frame posterior means and variances, and how straight the trajectories are.

Curvature (Henaff et al. 2019): for a trajectory p_0 .. p_{N-1} with steps v_k = p_{k+1} - p_k, the
curvature at k is the angle between v_k and v_{k+1}, in degrees (0 = straight, 90 = orthogonal turn).
Frames are streamed: memory does not grow with the video's length.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np


class VideoError(ValueError):
    """A video that cannot be read, named with the reason."""


def angles(points: np.ndarray) -> np.ndarray:
    """Curvature in degrees at each interior point of a trajectory [N, ...] (N - 2 values)."""
    p = np.asarray(points, dtype=np.float64).reshape(len(points), -1)
    v = np.diff(p, axis=0)
    a, b = v[:-1], v[1:]
    na, nb = np.linalg.norm(a, axis=1), np.linalg.norm(b, axis=1)
    cos = (a * b).sum(1) / np.maximum(na * nb, 1e-300)
    ang = np.degrees(np.arccos(np.clip(cos, -1.0, 1.0)))
    ang[(na == 0) | (nb == 0)] = np.nan  # no direction where the trajectory does not move
    return ang


@dataclass
class VideoEncoding:
    frames: np.ndarray  # frame indices in the video
    mu: np.ndarray  # [N, D]
    var: np.ndarray  # [N, D]
    latent_curvature: np.ndarray  # [N - 2] degrees
    pixel_curvature: np.ndarray  # [N - 2] degrees
    fps: float
    stopped_at: int | None = None  # frame where decoding stopped early (truncated file), else None
    notes: list[str] = field(default_factory=list)

    @property
    def mean_latent_curvature(self) -> float | None:
        v = self.latent_curvature[np.isfinite(self.latent_curvature)]
        return float(v.mean()) if len(v) else None

    @property
    def mean_pixel_curvature(self) -> float | None:
        v = self.pixel_curvature[np.isfinite(self.pixel_curvature)]
        return float(v.mean()) if len(v) else None


class _Reader:
    """Decodes frames on a background thread into a short bounded queue (OpenCV releases the GIL while
    decoding), so that decoding overlaps conversion and inference on the caller's thread; memory stays flat."""

    _END = object()

    def __init__(self, cap, every: int, depth: int = 8):
        import queue
        import threading

        self.cap, self.every = cap, every
        self.q: queue.Queue = queue.Queue(maxsize=depth)
        self.stop = threading.Event()
        self.read = 0  # frames decoded so far
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, name="sami-rt-video-reader", daemon=True)
        self.thread.start()

    def _put(self, item) -> bool:
        import queue

        while not self.stop.is_set():
            try:
                self.q.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def _run(self):
        try:
            i = 0
            while not self.stop.is_set():
                ok, frame = self.cap.read()
                if not ok:
                    break
                self.read = i + 1
                if i % self.every == 0 and not self._put((i, frame)):
                    return
                i += 1
        except BaseException as e:  # handed to the consumer, raised there
            self.error = e
        finally:
            self._put(self._END)

    def __iter__(self):
        while True:
            item = self.q.get()
            if item is self._END:
                if self.error is not None:
                    raise self.error
                return
            yield item

    def close(self):
        self.stop.set()
        self.thread.join()
        self.cap.release()


def encode_video(rt, path, every: int = 1, batch: int = 64, progress=None) -> VideoEncoding:
    from sami_rt.images import load_cv2, to_model

    cv2 = load_cv2()

    p = Path(path)
    if not p.is_file():
        raise VideoError(f"video {p} does not exist" if not p.exists() else f"{p} is not a file")
    if isinstance(every, bool) or not isinstance(every, (int, np.integer)) or every < 1:
        raise VideoError(f"every must be a positive frame step, got {every!r}")
    if isinstance(batch, bool) or not isinstance(batch, (int, np.integer)) or batch < 1:
        raise VideoError(f"batch must be a positive number of frames, got {batch!r}")
    cap = cv2.VideoCapture(str(p))
    if not cap.isOpened():
        cap.release()
        raise VideoError(f"{p} is not a video OpenCV can open")
    b = rt.bundle
    total = int(cap.get(cv2.CAP_PROP_FRAME_COUNT) or 0)
    fps = float(cap.get(cv2.CAP_PROP_FPS) or 0.0)
    notes: list[str] = []
    first = [True]

    def convert(frame):
        x = to_model(frame, b.channels, (b.height, b.width), notes if first[0] else None, name=p.name)
        first[0] = False
        return x

    frames, mus, vars_, pix_curv = [], [], [], []
    buf = np.empty((batch, *b.image_shape), dtype=np.float32)  # reused for every batch
    buf_idx: list[int] = []
    prev: list[np.ndarray] = []  # last two frames in model space, for the pixel curvature

    def flush():
        mu, var = rt.backend.encode(buf[: len(buf_idx)])
        mus.append(np.array(mu, copy=True))
        vars_.append(np.array(var, copy=True))
        frames.extend(buf_idx)
        buf_idx.clear()

    reader = _Reader(cap, every)
    try:
        for i, frame in reader:
            x = convert(frame)
            if len(prev) == 2:
                pix_curv.append(angles(np.stack([prev[0], prev[1], x]))[0])
            prev = (prev + [x])[-2:]
            buf[len(buf_idx)] = x
            buf_idx.append(i)
            if len(buf_idx) == batch:
                flush()
            if progress is not None:
                progress(i + 1, total)
        if buf_idx:
            flush()
    finally:
        reader.close()
    stopped = reader.read if total and reader.read < total else None
    if not frames:
        raise VideoError(f"{p} has no frames that OpenCV could decode")
    mu, var = np.concatenate(mus), np.concatenate(vars_)
    lat = angles(mu) if len(mu) >= 3 else np.zeros(0)
    return VideoEncoding(np.asarray(frames), mu, var, lat, np.asarray(pix_curv, dtype=np.float64), fps, stopped, notes)
