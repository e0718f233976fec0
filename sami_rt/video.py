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


class _Pipeline:
    """Decoding and conversion on two worker threads, inference on the caller's.

    The workers take turns at the decoder (a lock keeps the frames in order and numbers them) and convert
    the frame they got, outside the lock, into its slot of the batch being filled: while one decodes, the
    other converts (OpenCV releases the GIL for both). Two batch buffers alternate, so the caller runs the
    encoder on a full batch while the workers fill the other one; memory stays flat whatever the video's
    length. Each buffer keeps two slots in front for the two frames before its batch (pixel curvature).
    """

    WORKERS = 2

    def __init__(self, cap, every: int, batch: int, image_shape: tuple, convert):
        import threading

        self.cap, self.every, self.batch, self.convert = cap, every, batch, convert
        self.bufs = [np.empty((batch + 2, *image_shape), dtype=np.float32) for _ in range(2)]
        self.cond = threading.Condition()  # the counters below
        self.decoder = threading.Lock()  # the capture: one worker decodes at a time
        self.read = 0  # frames decoded (or grabbed) so far
        self.assigned = 0  # wanted frames handed to workers, in order
        self.filled = [0, 0]  # converted frames in the batch each buffer holds
        self.released = 0  # batches the caller has finished with
        self.index: list[int] = []  # video frame index of each wanted frame
        self.done = False  # the decoder reached the end (or failed)
        self.stop = False
        self.error: BaseException | None = None
        self.threads = [threading.Thread(target=self._work, name=f"sami-rt-video-{k}", daemon=True)
                        for k in range(self.WORKERS)]
        for t in self.threads:
            t.start()

    def _next(self):
        """The next wanted frame and its sequence number, or None at the end. The caller holds the decoder
        lock, so frames are decoded and numbered in order; the state lock is held only for bookkeeping, never
        while decoding, so the other worker can hand in a converted frame meanwhile."""
        with self.cond:
            while not self.stop and self.assigned >= (self.released + 2) * self.batch:
                self.cond.wait()  # both buffers hold batches the caller has not finished
            if self.stop or self.done:
                return None
        ok, frame = True, None
        while ok and self.read % self.every:  # a skipped frame is only grabbed: decoded, not converted to BGR
            ok = self.cap.grab()
            self.read += ok
        if ok:
            ok, frame = self.cap.read()
        with self.cond:
            if not ok:
                self.done = True
                self.cond.notify_all()
                return None
            self.index.append(self.read)
            self.read += 1
            seq, self.assigned = self.assigned, self.assigned + 1
            return seq, frame

    def _work(self):
        try:
            while True:
                with self.decoder:
                    got = self._next()
                    if got is None:
                        return
                    seq, frame = got
                    if seq == 0:  # the first frame plans the fast path and writes the notes: alone
                        self.convert(frame, self.bufs[0][2])
                if seq:
                    self.convert(frame, self.bufs[(seq // self.batch) % 2][2 + seq % self.batch])
                with self.cond:
                    self.filled[(seq // self.batch) % 2] += 1
                    self.cond.notify_all()
        except BaseException as e:  # handed to the caller, raised there
            with self.cond:
                self.error, self.done = self.error or e, True
                self.cond.notify_all()

    def batches(self):
        """Yields (buffer, n): batch j's frames are buffer[2 : 2 + n], the two before it buffer[0:2]."""
        j = 0
        while True:
            with self.cond:
                while True:
                    if self.error is not None:
                        raise self.error
                    lo = j * self.batch
                    n = min(self.batch, self.assigned - lo)
                    if self.filled[j % 2] == self.batch or (self.done and self.filled[j % 2] == max(n, 0)):
                        break
                    self.cond.wait()
            if n <= 0:
                return
            yield self.bufs[j % 2], n
            with self.cond:
                self.filled[j % 2] = 0
                self.released = j = j + 1
                self.cond.notify_all()

    def carry(self, buf: np.ndarray, n: int, n_prev: int) -> int:
        """Copies the last frames of a finished batch in front of the next buffer; returns how many."""
        keep = min(2, n_prev + n)
        other = self.bufs[1] if buf is self.bufs[0] else self.bufs[0]
        other[2 - keep : 2] = buf[2 + n - keep : 2 + n]
        return keep

    def close(self):
        with self.cond:
            self.stop = True
            self.cond.notify_all()
        for t in self.threads:
            t.join()
        self.cap.release()


class _Converter:
    """Frames -> model input, written straight into a batch slot. A frame of a new size or type goes through
    ``images.to_model`` (the first one also writes the notes) and plans a fast path for the frames like it:
    the same arithmetic (crop, grey, resize, then x = pixel / 127.5 - 1 in float32) in a few OpenCV calls
    without Python-level temporaries, because at 640x480 decoding costs only ~0.25 ms a frame. Safe to call
    from several threads: the plan is one tuple, replaced whole."""

    def __init__(self, channels: int, size: tuple[int, int], notes: list, name: str):
        from sami_rt.images import load_cv2, to_model

        self.cv2, self.to_model = load_cv2(), to_model  # looked up once, not per frame
        self.channels, self.size, self.notes, self.name = channels, size, notes, name
        self.plan = None  # (frame shape, crop, interpolation) of the fast path
        self.first = True

    def __call__(self, frame: np.ndarray, out: np.ndarray) -> None:
        plan = self.plan
        if plan is None or plan[0] != frame.shape or frame.dtype != np.uint8:
            out[...] = self.to_model(frame, self.channels, self.size, self.notes if self.first else None, self.name)
            self.first = False
            if frame.dtype == np.uint8 and frame.ndim == 3 and frame.shape[2] == 3:
                self.plan = self._plan(frame)
            return
        cv2 = self.cv2
        _, crop, interp = plan
        img = frame[crop] if crop is not None else frame
        if self.channels == 1:
            img = cv2.cvtColor(img, cv2.COLOR_BGR2GRAY)  # grey first: the resize then works on one channel
        if crop is not None:
            img = cv2.resize(img, (self.size[1], self.size[0]), interpolation=interp)
        if self.channels == 1:
            out[0] = img
        else:
            out[...] = img[:, :, ::-1].transpose(2, 0, 1)
        out /= np.float32(127.5)
        out -= np.float32(1.0)

    def _plan(self, frame):
        from sami_rt.images import crop_box, resize_interpolation

        h, w = frame.shape[:2]
        if (h, w) == self.size:
            return frame.shape, None, None
        rows, cols, s = crop_box(h, w, self.size)
        return frame.shape, (rows, cols), resize_interpolation(s)


def _open(cv2, p: Path):
    """A capture whose decoder runs on one thread: FFmpeg's second decoding thread does not make 640x480
    decoding faster here, but takes CPU time the conversion threads need (benchmarks/RESULTS.md)."""
    try:
        cap = cv2.VideoCapture(str(p), cv2.CAP_ANY, [cv2.CAP_PROP_N_THREADS, 1])
        if cap.isOpened():
            return cap
        cap.release()
    except cv2.error:  # a backend that refuses the parameter
        pass
    return cv2.VideoCapture(str(p))


def encode_video(rt, path, every: int = 1, batch: int = 64, progress=None) -> VideoEncoding:
    from sami_rt.images import load_cv2

    cv2 = load_cv2()

    p = Path(path)
    if not p.is_file():
        raise VideoError(f"video {p} does not exist" if not p.exists() else f"{p} is not a file")
    if isinstance(every, bool) or not isinstance(every, (int, np.integer)) or every < 1:
        raise VideoError(f"every must be a positive frame step, got {every!r}")
    if isinstance(batch, bool) or not isinstance(batch, (int, np.integer)) or batch < 1:
        raise VideoError(f"batch must be a positive number of frames, got {batch!r}")
    cap = _open(cv2, p)
    if not cap.isOpened():
        cap.release()
        raise VideoError(f"{p} is not a video OpenCV can open")
    b = rt.bundle
    total = int(cap.get(cv2.CAP_PROP_FRAME_COUNT) or 0)
    fps = float(cap.get(cv2.CAP_PROP_FPS) or 0.0)
    notes: list[str] = []
    convert = _Converter(b.channels, (b.height, b.width), notes, p.name)
    encode = getattr(rt.backend, "stream_encode", rt.backend.encode)
    mus, vars_, pix_curv = [], [], []
    n_prev, n_done = 0, 0  # frames kept in front of the batch (0..2) for the pixel curvature; frames encoded
    reader = _Pipeline(cap, every, batch, b.image_shape, convert)
    try:
        for buf, n in reader.batches():
            mu, var = encode(buf[2 : 2 + n])
            mus.append(np.array(mu, copy=True))
            vars_.append(np.array(var, copy=True))
            seq = buf[2 - n_prev : 2 + n]
            if len(seq) >= 3:
                pix_curv.append(angles(seq))
            n_prev, n_done = reader.carry(buf, n, n_prev), n_done + n
            if progress is not None:
                progress(reader.index[n_done - 1] + 1, total)
    finally:
        reader.close()
    frames = reader.index[:n_done]
    stopped = reader.read if total and reader.read < total else None
    if not frames:
        raise VideoError(f"{p} has no frames that OpenCV could decode")
    mu, var = np.concatenate(mus), np.concatenate(vars_)
    lat = angles(mu) if len(mu) >= 3 else np.zeros(0)
    pix = np.concatenate(pix_curv) if pix_curv else np.zeros(0)
    return VideoEncoding(np.asarray(frames), mu, var, lat, pix, fps, stopped, notes)
