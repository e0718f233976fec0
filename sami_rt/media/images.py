"""Images in and out of model space (x = pixel / 127.5 - 1, shape [C, H, W]) with OpenCV, and ``write_video``,
the one video writer (the bench's disk video, the examples, the benchmarks' clips, the tests' videos).

The preprocessing (``sami_rt.contract.format.Preprocess``) is defined here once: training's data loading
(``train/data.py``) and the runtime both call :func:`to_model` / :func:`read_image` with the model's
:class:`~sami_rt.contract.format.ImageSpec`, and the bundle records that spec."""

from __future__ import annotations

import itertools
import os
from pathlib import Path
from typing import Iterable

import numpy as np

from sami_rt.contract.format import ImageSpec

MAX_SIDE = 1 << 20  # OpenCV's CV_IO_MAX_IMAGE_WIDTH and _HEIGHT: its decoders assert beyond it
MAX_PIXELS = 100_000_000  # refuse images larger than this before decoding them whole
IMAGE_EXTS = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff", ".pgm", ".ppm")
VIDEO_EXTS = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg")  # what a video path ends in
IMAGE_WRITE_EXTS = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff")  # write_image: grey and colour


from sami_rt.errors import ImageError, InputError, VideoError
from sami_rt.media.files import atomic_path, atomic_write_bytes


def load_cv2():
    """OpenCV with its own error log silenced: its failures become this package's one-sentence errors."""
    import cv2  # load_cv2 is where OpenCV loads (0.1 s), its log silenced

    try:
        cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_SILENT)
    except AttributeError:  # OpenCV builds without the logging utilities
        pass
    return cv2


def resize_interpolation(scale: float) -> int:
    """Area averaging to shrink, bicubic to enlarge (``scale`` = source size / model size)."""
    cv2 = load_cv2()
    return cv2.INTER_AREA if scale > 1 else cv2.INTER_CUBIC


def crop_box(h: int, w: int, size: tuple[int, int], crop: int = 0) -> tuple[slice, slice, float]:
    """The centre crop of an h x w image (a square of at most ``crop`` pixels, or with ``crop`` 0 the
    largest with the aspect ratio of ``size``) and its scale to ``size``."""
    H, W = size
    if crop:
        ch = cw = min(h, w, crop)
        s = ch / H
    else:
        s = min(h / H, w / W)
        ch, cw = max(1, int(round(H * s))), max(1, int(round(W * s)))
    top, left = (h - ch) // 2, (w - cw) // 2
    return slice(top, top + ch), slice(left, left + cw), s


def as_spec(spec, size=None) -> ImageSpec:
    """An ImageSpec, or (channels, (H, W)) for a plain image without crop or padding."""
    if isinstance(spec, ImageSpec):
        return spec
    return ImageSpec(int(spec), int(size[0]), int(size[1]))


def frame(x: np.ndarray, spec: ImageSpec) -> np.ndarray:
    """Model-space content [..., h, w] (the spec's content size) -> [..., H, W]: ``pad`` pixels of black (-1)
    on every side. Training pads its 28 x 28 Fashion-MNIST items with it, the runtime every picture."""
    p = spec.preprocess.pad
    if not p:
        return x
    widths = [(0, 0)] * (x.ndim - 2) + [(p, p), (p, p)]
    return np.pad(x, widths, constant_values=np.asarray(-1.0, x.dtype))


def to_model(img: np.ndarray, spec: ImageSpec | int, size: tuple[int, int] | None = None,
             notes: list | None = None, name: str = "image") -> np.ndarray:
    """Pixels (H, W) or (H, W, C) uint8/uint16/float in [0, 255] -> float32 [C, H, W] in [-1, 1].

    ``spec`` is the model's ImageSpec (or its channel count, with ``size``, for a plain image). An image of
    the model's full size is taken as it is (it is already framed as the model's own images are); any other
    is centre-cropped (the spec's ``crop``, else to the content's aspect ratio), converted to the model's
    channel count, resized to the content size and padded with the spec's ``pad``. Each change is appended
    to ``notes``.
    """
    cv2 = load_cv2()
    spec = as_spec(spec, size)
    channels = spec.channels

    img = np.asarray(img)
    if img.ndim not in (2, 3) or img.size == 0 or (img.ndim == 3 and img.shape[2] not in (1, 3, 4)):
        raise ImageError(f"{name}: expected pixels of shape (H, W) or (H, W, 1|3|4), got {list(img.shape)}")
    if img.dtype.kind not in "uif":
        raise ImageError(f"{name}: expected numeric pixels, got dtype {img.dtype}")
    if img.dtype.kind == "f" and not np.all(np.isfinite(img)):
        raise ImageError(f"{name}: the pixels hold NaN or infinite values")
    if img.dtype == np.uint16:
        img = (img / 257.0).astype(np.float32)
    elif img.dtype != np.uint8:
        img = img.astype(np.float32)
    if img.ndim == 3 and img.shape[2] == 1:
        img = img[:, :, 0]
    # Crop (a view), then drop channels, then resize, then add channels: the resize works on as few channels
    # as the model needs (a 640x480 frame's 480x480 crop to 32x32 grey: converting then resizing takes
    # 0.11 ms, resizing in colour then converting 0.18 ms; part of what keeps video close to the decoder).
    h, w = img.shape[:2]
    whole = (h, w) == spec.size  # already in the model's framing
    H, W = spec.size if whole else spec.content_size
    resize = (h, w) != (H, W)
    if resize:
        rows, cols, s = crop_box(h, w, (H, W), spec.preprocess.crop)
        img = img[rows, cols]
    if img.ndim == 3 and img.shape[2] == 4:
        img = cv2.cvtColor(img, cv2.COLOR_BGRA2BGR)
        _note(notes, f"{name}: alpha channel dropped")
    if channels == 1 and img.ndim == 3:
        img = cv2.cvtColor(img, cv2.COLOR_BGR2GRAY)
        _note(notes, f"{name}: converted to grey")
    if resize:
        img = cv2.resize(img, (W, H), interpolation=resize_interpolation(s))
        _note(notes, f"{name}: {w}x{h} centre-cropped and resized to {W}x{H}")
    if not whole and spec.preprocess.pad:
        _note(notes, f"{name}: framed by {spec.preprocess.pad} black pixels to {spec.width}x{spec.height}")
    if channels == 3 and img.ndim == 2:
        img = cv2.cvtColor(img, cv2.COLOR_GRAY2BGR)
        _note(notes, f"{name}: grey converted to 3 channels")
    arr = img.astype(np.float32)
    if arr.ndim == 2:
        arr = arr[None]
    else:
        arr = arr[:, :, ::-1].transpose(2, 0, 1)  # BGR -> RGB, (C, H, W)
    x = np.ascontiguousarray(np.clip(arr, 0, 255) / 127.5 - 1.0, dtype=np.float32)
    return x if whole else np.ascontiguousarray(frame(x, spec))


def _note(notes, text):
    if notes is not None:
        notes.append(text)


MAX_FILE_BYTES = 1 << 30  # an image file larger than this is refused unread


def header_size(data: bytes) -> tuple[int, int] | None:
    """(width, height) from a PNG, JPEG or BMP header without decoding the image; None for other formats."""
    if data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) >= 24:
        return int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
    if data[:2] == b"BM" and len(data) >= 26:
        return (abs(int.from_bytes(data[18:22], "little", signed=True)),
                abs(int.from_bytes(data[22:26], "little", signed=True)))
    if data[:2] == b"\xff\xd8":
        i = 2
        while i + 9 <= len(data):
            if data[i] != 0xFF:
                return None
            marker = data[i + 1]
            if marker == 0xFF:  # fill byte
                i += 1
                continue
            if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):  # start of frame
                return int.from_bytes(data[i + 7 : i + 9], "big"), int.from_bytes(data[i + 5 : i + 7], "big")
            if marker in (0xD8, 0x01) or 0xD0 <= marker <= 0xD7:
                i += 2
                continue
            i += 2 + int.from_bytes(data[i + 2 : i + 4], "big")
    return None


def truncation(data: bytes) -> str | None:
    """Why a PNG or JPEG file is incomplete (decoders return part of such an image silently), else None."""
    if data[:8] == b"\x89PNG\r\n\x1a\n" and b"IEND" not in data[-16:]:
        return "a truncated PNG (its IEND chunk is missing)"
    if data[:2] == b"\xff\xd8" and data.rstrip(b"\x00")[-2:] != b"\xff\xd9":
        return "a truncated JPEG (its end-of-image marker is missing)"
    return None


def read_image(path: str | os.PathLike, spec: ImageSpec | int, size: tuple[int, int] | None = None,
               notes: list | None = None) -> np.ndarray:
    """An image file -> float32 [C, H, W] in [-1, 1] for the model (see to_model), or ImageError."""
    p = Path(path)
    if not p.exists():
        raise ImageError(f"image {p} does not exist")
    if p.is_dir():
        raise ImageError(f"{p} is a directory, not an image")
    if not p.is_file():
        raise ImageError(f"{p} is not a regular file")
    nbytes = p.stat().st_size
    if nbytes > MAX_FILE_BYTES:
        raise ImageError(f"{p} is {nbytes / 2**30:.1f} GiB; images larger than {MAX_FILE_BYTES >> 30} GiB are refused")
    return decode_image(p.read_bytes(), spec, size, notes, name=str(p))


def decode_image(data: bytes, spec: ImageSpec | int, size: tuple[int, int] | None = None, notes: list | None = None,
                 name: str = "the image") -> np.ndarray:
    """An image file's bytes (PNG, JPEG, BMP, WebP, TIFF) -> float32 [C, H, W] for the model, as ``read_image``
    reads a file (the same checks; errors name the image ``name``), or ImageError."""
    cv2 = load_cv2()

    p = name
    if len(data) > MAX_FILE_BYTES:
        raise ImageError(f"{p} is {len(data) / 2**30:.1f} GiB; images larger than {MAX_FILE_BYTES >> 30} GiB are "
                         "refused")
    if not data:
        raise ImageError(f"{p} is empty, not an image")
    wh = header_size(data)
    if wh is not None and wh[0] * wh[1] > MAX_PIXELS:
        raise ImageError(f"{p} is {wh[0]}x{wh[1]} pixels; images above {MAX_PIXELS // 1_000_000} megapixels are "
                         "refused before decoding (resize it first)")
    if wh is not None and max(wh) > MAX_SIDE:
        raise ImageError(f"{p} is {wh[0]}x{wh[1]} pixels; images wider or taller than {MAX_SIDE} pixels are "
                         "refused before decoding (OpenCV's limit)")
    why = truncation(data)
    if why is not None:
        raise ImageError(f"{p} is {why}; decoding it would give a partial image")
    try:
        img = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), cv2.IMREAD_UNCHANGED)
    except cv2.error as e:  # a decoder's own assertion on a malformed header
        msg = str(e).strip().splitlines()[-1] if str(e).strip() else type(e).__name__
        raise ImageError(f"{p} is not an image OpenCV can read ({msg})") from None
    if img is None or img.size == 0:
        raise ImageError(f"{p} is not an image OpenCV can read (expected PNG, JPEG, BMP, WebP or TIFF)")
    if img.dtype not in (np.uint8, np.uint16, np.float32):
        raise ImageError(f"{p} has {img.dtype} pixels; expected 8- or 16-bit integers or 32-bit floats")
    if img.dtype == np.float32 and not np.all(np.isfinite(img)):
        raise ImageError(f"{p} holds NaN or infinite pixel values")
    if img.dtype == np.uint16:
        _note(notes, f"{p}: 16-bit pixels scaled to 8-bit range")
    return to_model(img, as_spec(spec, size), notes=notes, name=p)


def image_files(path: str | os.PathLike) -> list[Path]:
    """The image files a path names: a folder's images (its own files with an image extension, sorted by
    name; InputError when there are none), or the path itself."""
    p = Path(path)
    if not p.is_dir():
        return [p]
    files = sorted(f for f in p.iterdir() if f.suffix.lower() in IMAGE_EXTS)
    if not files:
        videos = folder_videos(p)
        hint = (f"; it holds {len(videos)} video{'s' if len(videos) > 1 else ''}: encode one with sami-rt encode "
                f"{videos[0]}, or each with sami-rt encode-corpus {p} -o OUT") if videos else ""
        raise InputError(f"folder {p} holds no images ({', '.join(IMAGE_EXTS)}){hint}")
    return files


def folder_videos(path: str | os.PathLike) -> list[Path]:
    """A folder's own video files (by extension, VIDEO_EXTS), sorted by name."""
    return sorted(f for f in Path(path).iterdir() if f.suffix.lower() in VIDEO_EXTS and f.is_file())


def load_images(images, spec: ImageSpec, notes: list | None = None) -> np.ndarray:
    """Paths, a folder, uint8 pixel arrays (H, W[, C]) or a float batch [B, C, H, W] in [-1, 1] -> the model's
    input [B, C, H, W] through the spec's preprocessing (a float batch is taken as model input already)."""
    if isinstance(images, (str, os.PathLike)):
        images = image_files(images)
    if isinstance(images, np.ndarray) and images.dtype != np.uint8 and images.ndim == 4:
        x = np.ascontiguousarray(images, dtype=np.float32)
        if x.shape[1:] != spec.shape:
            raise InputError(f"a float image batch must have shape [B, {', '.join(map(str, spec.shape))}] "
                             f"in [-1, 1], got {list(x.shape)}")
        if not np.all(np.isfinite(x)):
            raise InputError("the image batch holds NaN or infinite values")
        return x
    if isinstance(images, np.ndarray):
        images = [images] if images.ndim in (2, 3) else list(images)
    out = []
    for im in images:
        if isinstance(im, (str, os.PathLike)):
            out.append(read_image(im, spec, notes=notes))
        else:
            out.append(to_model(np.asarray(im), spec, notes=notes))
    return np.stack(out)


def from_model(x: np.ndarray) -> np.ndarray:
    """float [B, C, H, W] in [-1, 1] -> uint8 [B, H, W, C] (RGB or grey)."""
    return np.clip(np.round((np.asarray(x, dtype=np.float32) + 1.0) * 127.5), 0, 255).astype(np.uint8).transpose(0, 2, 3, 1)


def grid(images: np.ndarray, ncol: int = 8, pad: int = 2) -> np.ndarray:
    """uint8 [N, H, W, C] -> one uint8 [rows*(H+pad)+pad, cols*(W+pad)+pad, C] mosaic."""
    N, H, W, C = images.shape
    ncol = max(1, min(ncol, N))
    nrow = -(-N // ncol)
    out = np.zeros((nrow * (H + pad) + pad, ncol * (W + pad) + pad, C), dtype=np.uint8)
    for i in range(N):
        r, c = divmod(i, ncol)
        out[pad + r * (H + pad) : pad + r * (H + pad) + H, pad + c * (W + pad) : pad + c * (W + pad) + W] = images[i]
    return out


def write_image(path: str | os.PathLike, image: np.ndarray) -> None:
    """Write uint8 [H, W, C] (RGB or grey) atomically, in the format the file's extension names
    (``IMAGE_WRITE_EXTS``: PNG, JPEG at quality 95, BMP, lossless WebP, TIFF); ImageError for another."""
    ext = Path(path).suffix.lower()
    if ext not in IMAGE_WRITE_EXTS:
        raise ImageError(f"cannot write {path}: {ext or 'no extension'} is not one of {', '.join(IMAGE_WRITE_EXTS)}")
    _write(path, image, ext)


def write_png(path: str | os.PathLike, image: np.ndarray) -> None:
    """Write uint8 [H, W, C] (RGB or grey) as PNG whatever the name, atomically."""
    _write(path, image, ".png")


def _write(path, image: np.ndarray, ext: str) -> None:
    cv2 = load_cv2()

    img = image[:, :, 0] if image.shape[2] == 1 else image[:, :, ::-1]
    params = [cv2.IMWRITE_JPEG_QUALITY, 95] if ext in (".jpg", ".jpeg") else []
    ok, buf = cv2.imencode(ext, img, params)
    if not ok:
        raise ImageError(f"could not encode {path} as {ext[1:].upper()}")
    atomic_write_bytes(path, buf.tobytes())


def write_video(path: str | Path, frames: Iterable, fps: float = 10.0, fourcc: str = "mp4v",
                check: bool = True) -> Path:
    """Frames (uint8 or float rounded to uint8; [H, W] grey or [H, W, 3] BGR, the first frame sets the size and
    colour) into ``path`` with OpenCV's ``fourcc`` codec (the container follows the extension), written under
    a temporary name and renamed when complete. ``check``: the file must read back with as many frames as
    were written. Raises VideoError where OpenCV cannot write this codec here or a frame does not fit."""
    cv2 = load_cv2()
    path = Path(path)
    it = iter(frames)
    first = next(it, None)
    if first is None:
        raise VideoError(f"{path}: no frames to write")
    with atomic_path(path, suffix=path.suffix) as tmp:  # OpenCV picks the container by the name's extension
        f0 = np.asarray(first)
        h, w = f0.shape[:2]
        writer = cv2.VideoWriter(str(tmp), cv2.VideoWriter_fourcc(*fourcc), float(fps), (w, h), isColor=f0.ndim == 3)
        if not writer.isOpened():
            raise VideoError(f"OpenCV cannot write {fourcc} video to {path.name} here")
        n = 0
        try:
            for f in itertools.chain([f0], it):
                f = np.asarray(f)
                if f.shape != f0.shape:
                    raise VideoError(f"{path}: frame {n} has shape {f.shape}, the first {f0.shape}")
                writer.write(np.ascontiguousarray(f if f.dtype == np.uint8 else np.clip(np.round(f), 0, 255).astype(np.uint8)))
                n += 1
        finally:
            writer.release()
        if check:
            cap = cv2.VideoCapture(str(tmp))
            got = 0
            while cap.grab():
                got += 1
            cap.release()
            if got != n:
                raise VideoError(f"OpenCV wrote {got} of {n} frames to {path.name}")
    return path
