"""Video encoding: a video's frames streamed through an encoder, giving per-frame posterior means and
variances and the curvature of the latent and the pixel trajectories (``sami_rt.video.trajectory``).

A reader thread decodes (``sami_rt.video.frames.Reader``), the caller's thread converts frames into one
preallocated batch (``FrameConverter``) and encodes it: memory does not grow with the video's length.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import numpy as np

from sami_rt.contract.format import ImageSpec
from sami_rt.errors import VideoError
from sami_rt.media.images import load_cv2
from sami_rt.video import frames
from sami_rt.video.frames import FrameConverter, Reader
from sami_rt.video.trajectory import VideoEncoding, angles, straightness  # noqa: F401 (straightness: importable here)

Encode = Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]]


def _check(p: Path, every, batch) -> None:
    if not p.is_file():
        raise VideoError(f"video {p} does not exist" if not p.exists() else f"{p} is not a file")
    why = frames.missing_mp4_index(p)
    if why:  # before OpenCV, which would print FFmpeg's "moov atom not found" and say only that it cannot open it
        raise VideoError(f"{p} {why}")
    if isinstance(every, bool) or not isinstance(every, (int, np.integer)) or every < 1:
        raise VideoError(f"every must be a positive frame step, got {every!r}")
    if isinstance(batch, bool) or not isinstance(batch, (int, np.integer)) or batch < 1:
        raise VideoError(f"batch must be a positive number of frames, got {batch!r}")


class _Batches:
    """One preallocated batch with the two frames before it kept in front (the pixel curvature spans batch
    boundaries); ``flush`` encodes the batch and collects the means, variances and pixel angles."""

    def __init__(self, encode: Encode, shape: tuple[int, ...], batch: int):
        self.encode = encode
        self.buf = np.empty((batch + 2, *shape), dtype=np.float32)
        self.n_prev, self.n = 0, 0  # frames kept in front (0..2), frames in the current batch
        self.mus: list[np.ndarray] = []
        self.vars: list[np.ndarray] = []
        self.pix_curv: list[np.ndarray] = []

    def slot(self) -> np.ndarray:
        return self.buf[2 + self.n]

    def flush(self) -> None:
        buf, n, n_prev = self.buf, self.n, self.n_prev
        mu, var = self.encode(buf[2 : 2 + n])
        self.mus.append(np.array(mu, copy=True))
        self.vars.append(np.array(var, copy=True))
        seq = buf[2 - n_prev : 2 + n]
        if len(seq) >= 3:
            self.pix_curv.append(angles(seq))
        keep = min(2, n_prev + n)
        buf[2 - keep : 2] = buf[2 + n - keep : 2 + n].copy()
        self.n_prev, self.n = keep, 0


def encode_frames(encode: Encode, spec: ImageSpec, path, every: int = 1, batch: int = 64,
                 progress: Callable[[int, int], None] | None = None, allow_luma: bool = True,
                 decoder_threads: int | None = None) -> VideoEncoding:
    """Streams a video through ``encode`` (float32 batch [B, *spec.shape] -> (mu, var) [B, D]; a backend's
    ``stream_encode`` or ``encode``) for a model whose image is ``spec``. ``allow_luma``: a one-channel model
    may read a yuv420p video's frames as the decoder's luma planes (``frames.open_video``;
    ``VideoEncoding.luma`` says whether it did); False: always BGR frames, converted as images are, so that
    the encoder sees what it sees for the decoded frames saved as images. ``decoder_threads``: FFmpeg's
    decoder threads (default ``hardware.cpus.pipeline_threads()``; 0: FFmpeg's own default)."""
    cv2 = load_cv2()
    p = Path(path)
    _check(p, every, batch)
    cap, first, luma = frames.open_video(cv2, p, spec.channels if allow_luma else 3, decoder_threads)
    reader = None
    try:
        if not cap.isOpened():
            raise VideoError(f"{p} is not a video OpenCV can open")
        total = int(cap.get(cv2.CAP_PROP_FRAME_COUNT) or 0)
        fps = float(cap.get(cv2.CAP_PROP_FPS) or 0.0)
        notes: list[str] = []
        convert = FrameConverter(spec, notes, p.name, luma)
        out = _Batches(encode, spec.shape, batch)
        indices = []
        reader = Reader(cap, every, first)
        for i, frame in reader:
            convert(frame, out.slot())
            indices.append(i)
            out.n += 1
            if out.n == batch:
                out.flush()
            if progress is not None:
                progress(i + 1, total)
        if out.n:
            out.flush()
    finally:
        if reader is not None:
            reader.close()  # stops the thread and releases the capture
        else:
            cap.release()
    stopped = reader.read if total and reader.read < total else None
    if not indices:
        raise VideoError(f"{p} has no frames that OpenCV could decode")
    mu, var = np.concatenate(out.mus), np.concatenate(out.vars)
    lat = angles(mu) if len(mu) >= 3 else np.zeros(0)
    pix = np.concatenate(out.pix_curv) if out.pix_curv else np.zeros(0)
    return VideoEncoding(np.asarray(indices), mu, var, lat, pix, fps, stopped, notes, luma)
