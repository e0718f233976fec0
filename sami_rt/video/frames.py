"""Video frames into model input: opening a capture, reading a grey model's frames as the decoder's luma
planes, the one decoding loop (``Frames``), the reader thread that runs it beside the caller, and the frame
converter. ``sami_rt.video.encode`` builds the encoding pipeline from these; the benchmarks time them alone."""

from __future__ import annotations

import queue
import threading
from pathlib import Path

import numpy as np

from sami_rt.contract.format import ImageSpec
from sami_rt.errors import VideoError
from sami_rt.hardware.cpus import pipeline_threads
from sami_rt.media.images import crop_box, load_cv2, resize_interpolation, to_model

# Video-range luma (16..235) -> the grey that OpenCV's BGR -> grey conversion gives for that pixel of a
# decoded yuv420p frame: FFmpeg's swscale converts yuv420p with BT.601 video-range coefficients, and the
# BT.601 grey of its BGR output is, in exact arithmetic, (Y - 16) * 255 / 219 whatever the chroma. Its
# fixed-point result is the floor of that where the decoded chroma is exactly neutral (128), at even frame
# heights and for streams not tagged full range (tested over every luma value, tests/test_video.py;
# at odd heights, or tagged full range, swscale takes another path, a level off on 37-49% of the pixels),
# and mostly one level lower where the chroma is not neutral (0.8 on average, benchmarks/RESULTS.md).
LUMA_TO_GREY = np.clip(np.floor((np.arange(256) - 16) * 255 / 219 + 1e-9), 0, 255).astype(np.uint8)
I420 = int.from_bytes(b"I420", "little")  # OpenCV's CAP_PROP_CODEC_PIXEL_FORMAT for yuv420p


# ------------------------------------------------------------------------------------------ container
def missing_mp4_index(p: Path) -> str | None:
    """Why an MP4 / MOV file (ISO base media: its first box is 'ftyp') cannot be read at all, or None: its
    index, the 'moov' box, is absent or cut off. Writers put it at the end unless told otherwise, so a file
    cut short (a copy or a recording that stopped) loses it, and FFmpeg then finds no frame ("moov atom not
    found"). Only the top-level boxes' headers are read. None for any other file, or one whose index is
    whole (a file cut inside its frames is read up to the cut)."""
    try:
        size = p.stat().st_size
        with open(p, "rb") as f:
            boxes, off, cut = [], 0, None
            while off + 8 <= size and len(boxes) < 10_000:
                f.seek(off)
                head = f.read(16)
                n, kind = int.from_bytes(head[:4], "big"), head[4:8]
                if n == 1 and len(head) == 16:
                    n = int.from_bytes(head[8:16], "big")
                elif n == 0:
                    n = size - off
                if n < 8:
                    return None  # not a box structure we understand: OpenCV decides
                boxes.append(kind)
                if off + n > size:
                    cut = kind
                    break
                off += n
    except OSError:
        return None
    if not boxes or boxes[0] != b"ftyp":
        return None
    if b"moov" in boxes and cut != b"moov":
        return None
    where = "the file ends inside it" if cut == b"moov" else "the file ends before it"
    return (f"looks truncated: it is an MP4/MOV file without its index (the 'moov' box; {where}), so no frame can be "
            "found; a file cut short loses the index when it is written last (ffmpeg -movflags +faststart puts it "
            "first, and then the frames before a cut stay readable)")


# ------------------------------------------------------------------------------------------ capture
def open_capture(cv2, p: Path, luma: bool = False, threads: int | None = None):
    """A capture whose decoder uses ``threads`` threads; by default those that the reader and the caller's
    thread leave (``pipeline_threads``: one on a 2-core machine, where FFmpeg's default of two made decoding
    alone a little faster but ``encode_video`` slower, benchmarks/RESULTS.md); 0: FFmpeg's own default.
    ``luma``: frames come as the decoder's first plane, unconverted (``CAP_PROP_CONVERT_RGB`` off); None
    where the backend refuses."""
    threads = pipeline_threads() if threads is None else threads
    params = ([cv2.CAP_PROP_N_THREADS, threads] if threads else []) + ([cv2.CAP_PROP_CONVERT_RGB, 0] if luma else [])
    if not params:
        return cv2.VideoCapture(str(p))
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
    cv2 = load_cv2()
    if luma.dtype != np.uint8 or luma.ndim != 2 or bgr.dtype != np.uint8 or bgr.shape != (*luma.shape, 3):
        return False
    grey = cv2.cvtColor(bgr, cv2.COLOR_BGR2GRAY).astype(np.int16)
    d = np.abs(cv2.LUT(luma, LUMA_TO_GREY).astype(np.int16) - grey)
    neutral = (bgr[..., 0] == bgr[..., 1]) & (bgr[..., 1] == bgr[..., 2])
    if d[neutral].any():
        return False
    full = np.abs(luma.astype(np.int16) - grey)
    return float(d.mean()) <= 1.5 and float(np.mean(d > 3)) <= 0.01 and float(d.mean()) < float(full.mean())


def open_video(cv2, p: Path, channels: int, threads: int | None = None):
    """(capture, first frame or None, frames as luma planes?). For a one-channel model and a yuv420p
    video the capture hands over the luma plane and skips the conversion to BGR, which costs as much as
    decoding (0.10 against 0.21 ms a 640x480 frame on one decoder thread, benchmarks/RESULTS.md); the
    first frame, decoded both ways, must agree (``luma_agrees``), else the video is read as BGR. Only the
    first frame is checked: a stream that changes its pixel format later is not seen. Any other case
    reads BGR frames. No capture is left open on an error. ``threads``: as for ``open_capture``."""
    if channels != 1:
        return open_capture(cv2, p, threads=threads), None, False
    cap = open_capture(cv2, p, luma=True, threads=threads)
    if cap is None:
        return open_capture(cv2, p, threads=threads), None, False
    check = None
    try:
        if int(cap.get(cv2.CAP_PROP_CODEC_PIXEL_FORMAT)) == I420:
            ok, y = cap.read()
            check = open_capture(cv2, p, threads=threads)
            ok2, bgr = check.read() if check.isOpened() else (False, None)
            if ok and ok2 and luma_agrees(y, bgr):
                check.release()
                return cap, y, True
            if ok2:  # frame 0 decoded to BGR: read on from there
                cap.release()
                return check, bgr, False
            check.release()  # its failed read may have moved past frame 0: a fresh capture below
        cap.release()
        return open_capture(cv2, p, threads=threads), None, False
    except BaseException:
        cap.release()
        if check is not None:
            check.release()
        raise


# ------------------------------------------------------------------------------------------ reading
class Frames:
    """The decoding loop: iterates (index, frame) over every ``every``-th frame of a capture; a skipped frame
    is only grabbed (decoded, not converted). ``first``: frame 0, already decoded (or None). ``read``: the
    frames decoded so far. ``stop``: an event that ends the loop before the next decode."""

    def __init__(self, cap, every: int = 1, first: np.ndarray | None = None, stop=None):
        self.cap, self.every, self.first, self.stop = cap, every, first, stop
        self.read = 0

    def __iter__(self):
        i = 0
        if self.first is not None:
            first, self.first = self.first, None
            self.read = i = 1
            yield 0, first
        while self.stop is None or not self.stop.is_set():
            wanted = i % self.every == 0
            ok, frame = self.cap.read() if wanted else (self.cap.grab(), None)
            if not ok:
                return
            self.read = i + 1
            if wanted:
                yield i, frame
            i += 1


def decode_alone(path, luma: bool = False) -> int:
    """Decodes a video with OpenCV's defaults, dropping the frames (the floor ``encode_video`` is compared
    with); returns the number of frames. ``luma``: with the conversion to BGR off (``CAP_PROP_CONVERT_RGB``
    0), which for a yuv420p video hands over the luma plane: decoding's own cost."""
    cv2 = load_cv2()  # its log silenced: frames without BGR conversion draw a warning each
    cap = cv2.VideoCapture(str(path), cv2.CAP_ANY, [cv2.CAP_PROP_CONVERT_RGB, 0]) if luma else cv2.VideoCapture(str(path))
    try:
        return sum(1 for _ in Frames(cap))
    finally:
        cap.release()


class Reader:
    """Runs ``Frames`` on a background thread into a short bounded queue (OpenCV releases the GIL while
    decoding), so that decoding overlaps conversion and inference on the caller's thread; memory stays flat.
    One thread keeps the decoder: two workers taking turns at it, each converting the frame it got, measured
    slower (benchmarks/RESULTS.md). Iterating gives (index, frame); ``close`` stops the thread and releases
    the capture."""

    _END = object()

    def __init__(self, cap, every: int = 1, first: np.ndarray | None = None, depth: int = 8):
        self.cap = cap
        self.q: queue.Queue = queue.Queue(maxsize=depth)
        self.stop = threading.Event()
        self.frames = Frames(cap, every, first, self.stop)
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, name="sami-rt-video-reader", daemon=True)
        self.thread.start()

    @property
    def read(self) -> int:
        """Frames decoded so far."""
        return self.frames.read

    def _put(self, item) -> bool:
        while not self.stop.is_set():
            try:
                self.q.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def _run(self):
        try:
            for item in self.frames:
                if not self._put(item):
                    return
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


# --------------------------------------------------------------------------------------- conversion
class FrameConverter:
    """Frames -> model input, written straight into a batch slot. A frame of a new size or type goes through
    ``images.to_model`` (the first one also writes the notes) and plans a fast path for the frames like it:
    the same arithmetic (the spec's crop, grey, resize to the content size, x = pixel / 127.5 - 1 in float32,
    the spec's black border) in a few OpenCV calls without Python-level temporaries, because at 640x480
    decoding costs only ~0.2 ms a frame.

    ``luma``: the frames are the decoder's 8-bit luma planes (``open_video``), taken to grey by
    ``LUMA_TO_GREY`` in place of the BGR -> grey conversion of a decoded BGR frame."""

    def __init__(self, spec: ImageSpec, notes: list | None = None, name: str = "frame", luma: bool = False):
        if luma and spec.channels != 1:
            raise ValueError("luma frames are for one-channel models")
        self.cv2, self.to_model = load_cv2(), to_model  # looked up once, not per frame
        self.spec, self.notes, self.name, self.luma = spec, notes, name, luma
        self.plan = None  # (frame shape, crop, interpolation, border) of the fast path
        self.first = True

    def __call__(self, frame: np.ndarray, out: np.ndarray) -> None:
        plan = self.plan
        if plan is None or plan[0] != frame.shape or frame.dtype != np.uint8:
            self._slow(frame, out)
            return
        cv2, channels = self.cv2, self.spec.channels
        _, crop, interp, p = plan
        img = frame[crop] if crop is not None else frame
        if self.luma:
            img = cv2.LUT(img, LUMA_TO_GREY)  # crop first: the table then maps only the pixels kept
        elif channels == 1:
            img = cv2.cvtColor(img, cv2.COLOR_BGR2GRAY)  # grey first: the resize then works on one channel
        if crop is not None:
            h, w = self.spec.content_size
            img = cv2.resize(img, (w, h), interpolation=interp)
        if p:  # the black border, and the content inside it
            out.fill(-1.0)
            out = out[:, p:-p, p:-p]
        if channels == 1:
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
        out[...] = self.to_model(frame, self.spec, notes=notes, name=self.name)
        self.first = False
        if frame.dtype == np.uint8 and (frame.ndim == 2 if self.luma else frame.ndim == 3 and frame.shape[2] == 3):
            self.plan = self._plan(frame)

    def _plan(self, frame):
        """What ``to_model`` does to a frame of this shape: a frame of the model's full size is taken as it
        is; any other is cropped and resized to the content size (unless it has that size) and framed."""
        h, w = frame.shape[:2]
        spec = self.spec
        if (h, w) == spec.size:
            return frame.shape, None, None, 0
        if (h, w) == spec.content_size:
            return frame.shape, None, None, spec.preprocess.pad
        rows, cols, s = crop_box(h, w, spec.content_size, spec.preprocess.crop)
        return frame.shape, (rows, cols), resize_interpolation(s), spec.preprocess.pad


def model_frames(path, spec: ImageSpec) -> tuple[np.ndarray, tuple[int, int]]:
    """Every frame of a video decoded to BGR with OpenCV's defaults and converted for the model (as
    ``encode_video`` converts BGR frames), in one array [N, C, H, W]; and the frames' (width, height)."""
    cv2 = load_cv2()
    cap = cv2.VideoCapture(str(path))
    try:
        size = (int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)), int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT)))
        convert, xs = FrameConverter(spec, name=Path(path).name), []
        for _, frame in Frames(cap):
            xs.append(np.empty(spec.shape, np.float32))
            convert(frame, xs[-1])
    finally:
        cap.release()
    return (np.stack(xs) if xs else np.zeros((0, *spec.shape), np.float32)), size
