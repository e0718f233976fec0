"""Video encoding: per-frame posterior means and variances, and how straight the trajectories are.

Curvature (Henaff et al. 2019): for a trajectory p_0 .. p_{N-1} with steps v_k = p_{k+1} - p_k, the
curvature at k is the angle between v_k and v_{k+1}, in degrees (0 = straight, 90 = orthogonal turn).
Cosine straightness (Niu et al. 2024): the mean over k of cos(v_k, v_{k+1}), 1 for a straight line, 0 for
orthogonal turns on average, -1 for a trajectory that reverses at every step.
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


def straightness(curvature_deg: np.ndarray) -> float | None:
    """Cosine straightness: the mean cosine between successive steps, from their angles (``angles``); None
    when no angle is defined."""
    c = np.asarray(curvature_deg, dtype=np.float64)
    c = c[np.isfinite(c)]
    return float(np.cos(np.radians(c)).mean()) if len(c) else None


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
    luma: bool = False  # frames read as the decoder's luma planes (one-channel models, yuv420p), not BGR

    @property
    def mean_latent_curvature(self) -> float | None:
        v = self.latent_curvature[np.isfinite(self.latent_curvature)]
        return float(v.mean()) if len(v) else None

    @property
    def mean_pixel_curvature(self) -> float | None:
        v = self.pixel_curvature[np.isfinite(self.pixel_curvature)]
        return float(v.mean()) if len(v) else None

    @property
    def latent_straightness(self) -> float | None:
        return straightness(self.latent_curvature)

    @property
    def pixel_straightness(self) -> float | None:
        return straightness(self.pixel_curvature)


class _Reader:
    """Decodes frames on a background thread into a short bounded queue (OpenCV releases the GIL while
    decoding), so that decoding overlaps conversion and inference on the caller's thread; memory stays flat.
    One thread keeps the decoder: two workers taking turns at it, each converting the frame it got, measured
    slower (benchmarks/RESULTS.md)."""

    _END = object()

    def __init__(self, cap, every: int, first: np.ndarray | None = None, depth: int = 8):
        import queue
        import threading

        self.cap, self.every, self.first = cap, every, first  # first: frame 0, already decoded (or None)
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
            if self.first is not None:
                first, self.first = self.first, None
                self.read = i = 1
                if not self._put((0, first)):
                    return
            while not self.stop.is_set():
                wanted = i % self.every == 0
                # a skipped frame is only grabbed: decoded, not converted to BGR
                ok, frame = self.cap.read() if wanted else (self.cap.grab(), None)
                if not ok:
                    break
                self.read = i + 1
                if wanted and not self._put((i, frame)):
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


class _Converter:
    """Frames -> model input, written straight into a batch slot. A frame of a new size or type goes through
    ``images.to_model`` (the first one also writes the notes) and plans a fast path for the frames like it:
    the same arithmetic (crop, grey, resize, then x = pixel / 127.5 - 1 in float32) in a few OpenCV calls
    without Python-level temporaries, because at 640x480 decoding costs only ~0.2 ms a frame.

    ``luma``: the frames are the decoder's 8-bit luma planes (``_capture``), taken to grey by ``LUMA_TO_GREY``
    in place of the BGR -> grey conversion of a decoded BGR frame."""

    def __init__(self, channels: int, size: tuple[int, int], notes: list, name: str, luma: bool = False):
        from sami_rt.images import load_cv2, to_model

        if luma and channels != 1:
            raise ValueError("luma frames are for one-channel models")
        self.cv2, self.to_model = load_cv2(), to_model  # looked up once, not per frame
        self.channels, self.size, self.notes, self.name, self.luma = channels, size, notes, name, luma
        self.plan = None  # (frame shape, crop, interpolation) of the fast path
        self.first = True

    def __call__(self, frame: np.ndarray, out: np.ndarray) -> None:
        plan = self.plan
        if plan is None or plan[0] != frame.shape or frame.dtype != np.uint8:
            self._slow(frame, out)
            return
        cv2 = self.cv2
        _, crop, interp = plan
        img = frame[crop] if crop is not None else frame
        if self.luma:
            img = cv2.LUT(img, LUMA_TO_GREY)  # crop first: the table then maps only the pixels kept
        elif self.channels == 1:
            img = cv2.cvtColor(img, cv2.COLOR_BGR2GRAY)  # grey first: the resize then works on one channel
        if crop is not None:
            img = cv2.resize(img, (self.size[1], self.size[0]), interpolation=interp)
        if self.channels == 1:
            out[0] = img
        else:
            out[...] = img[:, :, ::-1].transpose(2, 0, 1)
        out /= np.float32(127.5)
        out -= np.float32(1.0)

    def _slow(self, frame, out):
        notes = self.notes if self.first else None
        if self.luma:
            if frame.dtype != np.uint8 or frame.ndim != 2:
                raise VideoError(f"{self.name}: the decoder gave a luma plane of shape {list(frame.shape)} and "
                                 f"type {frame.dtype}, not 8-bit (H, W)")
            if notes is not None:
                notes.append(f"{self.name}: converted to grey")  # as for a BGR frame: the luma is its grey
            frame = self.cv2.LUT(frame, LUMA_TO_GREY)
        out[...] = self.to_model(frame, self.channels, self.size, notes, self.name)
        self.first = False
        if frame.dtype == np.uint8 and (frame.ndim == 2 if self.luma else frame.ndim == 3 and frame.shape[2] == 3):
            self.plan = self._plan(frame)

    def _plan(self, frame):
        from sami_rt.images import crop_box, resize_interpolation

        h, w = frame.shape[:2]
        if (h, w) == self.size:
            return frame.shape, None, None
        rows, cols, s = crop_box(h, w, self.size)
        return frame.shape, (rows, cols), resize_interpolation(s)


# Video-range luma (16..235) -> the grey that OpenCV's BGR -> grey conversion gives for that pixel of a
# decoded yuv420p frame: FFmpeg's swscale converts yuv420p with BT.601 video-range coefficients, and the
# BT.601 grey of its BGR output is, in exact arithmetic, (Y - 16) * 255 / 219 whatever the chroma. Its
# fixed-point result is the floor of that where the decoded chroma is exactly neutral (128), at even frame
# heights and for streams not tagged full range (tested over every luma value, tests/test_runtime.py;
# at odd heights, or tagged full range, swscale takes another path, a level off on 37-49% of the pixels),
# and mostly one level lower where the chroma is not neutral (0.8 on average, benchmarks/RESULTS.md).
LUMA_TO_GREY = np.clip(np.floor((np.arange(256) - 16) * 255 / 219 + 1e-9), 0, 255).astype(np.uint8)
I420 = int.from_bytes(b"I420", "little")  # OpenCV's CAP_PROP_CODEC_PIXEL_FORMAT for yuv420p


def _open(cv2, p: Path, luma: bool = False):
    """A capture whose decoder uses the threads that the reader and the caller's thread leave
    (``pipeline_threads``: one on a 2-core machine, where FFmpeg's default of two made decoding alone a
    little faster but ``encode_video`` slower, benchmarks/RESULTS.md). ``luma``: frames come as the
    decoder's first plane, unconverted (``CAP_PROP_CONVERT_RGB`` off); None where the backend refuses."""
    from sami_rt.backends import pipeline_threads

    params = [cv2.CAP_PROP_N_THREADS, pipeline_threads()] + ([cv2.CAP_PROP_CONVERT_RGB, 0] if luma else [])
    try:
        cap = cv2.VideoCapture(str(p), cv2.CAP_ANY, params)
        if cap.isOpened():
            return cap
        cap.release()
    except cv2.error:  # a backend that refuses the parameters
        pass
    return None if luma else cv2.VideoCapture(str(p))


def luma_agrees(luma: np.ndarray, bgr: np.ndarray) -> bool:
    """Whether a decoder's luma plane, through ``LUMA_TO_GREY``, is the grey of the same frame decoded to
    BGR: exactly so at every neutral pixel (B = G = R), which makes a grey video encode identically either
    way and refuses the conversions the table does not model (odd heights, streams tagged full range);
    elsewhere the mean within 1.5 levels and 99% of the pixels within 3 (saturated colours clip in the BGR
    route, a few levels more); and nearer than the luma read as full-range grey (a full-range stream,
    yuvj420p from MJPEG say, reports the same pixel format as yuv420p; a frame that cannot tell the two
    apart, flat near level 113, fails). A 10-bit stream, or a decoder that hands over something else, is
    tens of levels off."""
    import cv2

    if luma.dtype != np.uint8 or luma.ndim != 2 or bgr.dtype != np.uint8 or bgr.shape != (*luma.shape, 3):
        return False
    grey = cv2.cvtColor(bgr, cv2.COLOR_BGR2GRAY).astype(np.int16)
    d = np.abs(cv2.LUT(luma, LUMA_TO_GREY).astype(np.int16) - grey)
    neutral = (bgr[..., 0] == bgr[..., 1]) & (bgr[..., 1] == bgr[..., 2])
    if d[neutral].any():
        return False
    full = np.abs(luma.astype(np.int16) - grey)
    return float(d.mean()) <= 1.5 and float(np.mean(d > 3)) <= 0.01 and float(d.mean()) < float(full.mean())


def _capture(cv2, p: Path, channels: int):
    """(capture, first frame or None, frames as luma planes?). For a one-channel model and a yuv420p
    video the capture hands over the luma plane and skips the conversion to BGR, which costs as much as
    decoding (0.10 against 0.21 ms a 640x480 frame on one decoder thread, benchmarks/RESULTS.md); the
    first frame, decoded both ways, must agree (``luma_agrees``), else the video is read as BGR. Only the
    first frame is checked: a stream that changes its pixel format later is not seen. Any other case
    reads BGR frames. No capture is left open on an error."""
    if channels != 1:
        return _open(cv2, p), None, False
    cap = _open(cv2, p, luma=True)
    if cap is None:
        return _open(cv2, p), None, False
    check = None
    try:
        if int(cap.get(cv2.CAP_PROP_CODEC_PIXEL_FORMAT)) == I420:
            ok, y = cap.read()
            check = _open(cv2, p)
            ok2, bgr = check.read() if check.isOpened() else (False, None)
            if ok and ok2 and luma_agrees(y, bgr):
                check.release()
                return cap, y, True
            if ok2:  # frame 0 decoded to BGR: read on from there
                cap.release()
                return check, bgr, False
            check.release()  # its failed read may have moved past frame 0: a fresh capture below
        cap.release()
        return _open(cv2, p), None, False
    except BaseException:
        cap.release()
        if check is not None:
            check.release()
        raise


def encode_video(rt, path, every: int = 1, batch: int = 64, progress=None, allow_luma: bool = True) -> VideoEncoding:
    """Streams a video through the encoder: a reader thread decodes (``_Reader``), the caller's thread
    converts frames into one preallocated batch (``_Converter``) and encodes it. ``allow_luma``: a
    one-channel model may read a yuv420p video's frames as the decoder's luma planes (``_capture``;
    ``VideoEncoding.luma`` says whether it did); False: always BGR frames, converted as images are, so
    that the encoder sees what it sees for the decoded frames saved as images."""
    from sami_rt.images import load_cv2

    cv2 = load_cv2()

    p = Path(path)
    if not p.is_file():
        raise VideoError(f"video {p} does not exist" if not p.exists() else f"{p} is not a file")
    if isinstance(every, bool) or not isinstance(every, (int, np.integer)) or every < 1:
        raise VideoError(f"every must be a positive frame step, got {every!r}")
    if isinstance(batch, bool) or not isinstance(batch, (int, np.integer)) or batch < 1:
        raise VideoError(f"batch must be a positive number of frames, got {batch!r}")
    b = rt.bundle
    cap, first, luma = _capture(cv2, p, b.channels if allow_luma else 3)
    reader = None
    try:
        if not cap.isOpened():
            raise VideoError(f"{p} is not a video OpenCV can open")
        total = int(cap.get(cv2.CAP_PROP_FRAME_COUNT) or 0)
        fps = float(cap.get(cv2.CAP_PROP_FPS) or 0.0)
        notes: list[str] = []
        convert = _Converter(b.channels, (b.height, b.width), notes, p.name, luma)
        encode = getattr(rt.backend, "stream_encode", rt.backend.encode)
        frames, mus, vars_, pix_curv = [], [], [], []
        # one preallocated batch, with the two frames before it kept in front for the pixel curvature
        buf = np.empty((batch + 2, *b.image_shape), dtype=np.float32)
        n_prev, n = 0, 0  # frames kept in front (0..2), frames in the current batch

        def flush():
            nonlocal n_prev, n
            mu, var = encode(buf[2 : 2 + n])
            mus.append(np.array(mu, copy=True))
            vars_.append(np.array(var, copy=True))
            seq = buf[2 - n_prev : 2 + n]
            if len(seq) >= 3:
                pix_curv.append(angles(seq))
            keep = min(2, n_prev + n)
            buf[2 - keep : 2] = buf[2 + n - keep : 2 + n].copy()
            n_prev, n = keep, 0

        reader = _Reader(cap, every, first)
        for i, frame in reader:
            convert(frame, buf[2 + n])
            frames.append(i)
            n += 1
            if n == batch:
                flush()
            if progress is not None:
                progress(i + 1, total)
        if n:
            flush()
    finally:
        if reader is not None:
            reader.close()  # stops the thread and releases the capture
        else:
            cap.release()
    stopped = reader.read if total and reader.read < total else None
    if not frames:
        raise VideoError(f"{p} has no frames that OpenCV could decode")
    mu, var = np.concatenate(mus), np.concatenate(vars_)
    lat = angles(mu) if len(mu) >= 3 else np.zeros(0)
    pix = np.concatenate(pix_curv) if pix_curv else np.zeros(0)
    return VideoEncoding(np.asarray(frames), mu, var, lat, pix, fps, stopped, notes, luma)
