"""Images in and out of model space (x = pixel / 127.5 - 1, shape [C, H, W]) with OpenCV."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

MAX_PIXELS = 100_000_000  # refuse images larger than this before decoding them whole
IMAGE_EXTS = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff", ".pgm", ".ppm")


class ImageError(ValueError):
    """An image that cannot be used, named with the reason."""


def to_model(img: np.ndarray, channels: int, size: tuple[int, int], notes: list | None = None,
             name: str = "image") -> np.ndarray:
    """Pixels (H, W) or (H, W, C) uint8/uint16/float in [0, 255] -> float32 [C, H, W] in [-1, 1].

    Colour is converted to the model's channel count, and the image centre-cropped to the model's aspect
    ratio and resized; each change is appended to ``notes``.
    """
    import cv2

    if img.dtype == np.uint16:
        img = (img / 257.0).astype(np.float32)
    elif img.dtype != np.uint8:
        img = img.astype(np.float32)
    if img.ndim == 3 and img.shape[2] == 1:
        img = img[:, :, 0]
    # Crop and resize first, then convert colour: both are linear, and converting the small image is what
    # keeps video encoding (640x480 frames to a 32x32 model) cheaper than decoding.
    H, W = size
    h, w = img.shape[:2]
    if (h, w) != (H, W):
        s = min(h / H, w / W)
        ch, cw = int(round(H * s)), int(round(W * s))
        top, left = (h - ch) // 2, (w - cw) // 2
        img = img[top : top + ch, left : left + cw]
        interp = cv2.INTER_AREA if s > 1 else cv2.INTER_CUBIC
        img = cv2.resize(img, (W, H), interpolation=interp)
        _note(notes, f"{name}: {w}x{h} centre-cropped and resized to {W}x{H}")
    if img.ndim == 3 and img.shape[2] == 4:
        img = cv2.cvtColor(img, cv2.COLOR_BGRA2BGR)
        _note(notes, f"{name}: alpha channel dropped")
    if channels == 1 and img.ndim == 3:
        img = cv2.cvtColor(img, cv2.COLOR_BGR2GRAY)
        _note(notes, f"{name}: converted to grey")
    elif channels == 3 and img.ndim == 2:
        img = cv2.cvtColor(img, cv2.COLOR_GRAY2BGR)
        _note(notes, f"{name}: grey converted to 3 channels")
    arr = img.astype(np.float32)
    if arr.ndim == 2:
        arr = arr[None]
    else:
        arr = arr[:, :, ::-1].transpose(2, 0, 1)  # BGR -> RGB, (C, H, W)
    return np.ascontiguousarray(np.clip(arr, 0, 255) / 127.5 - 1.0, dtype=np.float32)


def _note(notes, text):
    if notes is not None:
        notes.append(text)


def read_image(path: str | os.PathLike, channels: int, size: tuple[int, int], notes: list | None = None) -> np.ndarray:
    import cv2

    p = Path(path)
    if not p.exists():
        raise ImageError(f"image {p} does not exist")
    if p.is_dir():
        raise ImageError(f"{p} is a directory, not an image")
    img = cv2.imread(str(p), cv2.IMREAD_UNCHANGED)
    if img is None:
        raise ImageError(f"{p} is not an image OpenCV can read (expected PNG, JPEG, BMP, WebP or TIFF)")
    return to_model(img, channels, size, notes, name=str(p))


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


def write_png(path: str | os.PathLike, image: np.ndarray) -> None:
    """Write uint8 [H, W, C] (RGB or grey) as PNG, atomically."""
    import cv2

    from sami_rt.io import atomic_write_bytes

    img = image[:, :, 0] if image.shape[2] == 1 else image[:, :, ::-1]
    ok, buf = cv2.imencode(".png", img)
    if not ok:
        raise ImageError(f"could not encode {path} as PNG")
    atomic_write_bytes(path, buf.tobytes())
