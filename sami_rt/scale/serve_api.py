"""The HTTP API of ``sami-rt serve`` without the server: JSON bodies to ``Runtime.generate`` arguments and
encoder inputs, results to response bodies. ``sami_rt.scale.serve`` (Ray Serve) routes requests here; nothing in
this module needs Ray, so it is tested on its own.

Every problem with a request is an ``InputError`` or ``ImageError`` (``SamiError``) of one sentence, which
the server answers with status 400 and ``{"error": sentence}``.
"""

from __future__ import annotations

import base64
import binascii
import io
import json

import numpy as np

from sami_rt.errors import ImageError, InputError
from sami_rt.media.files import npz_bytes
from sami_rt.media.grids import auto_zoom, labelled_grid
from sami_rt.media.images import decode_image, from_model, header_size, load_cv2
from sami_rt.runtime import SAMPLERS, Runtime, default_steps

GENERATE_FIELDS = ("guide", "z", "n", "steps", "sampler", "eta", "seed", "scale", "interval", "mask", "guide_mean",
                   "format")
GENERATE_FORMATS = ("png", "npy", "npz", "json")
ENCODE_FIELDS = ("image", "images", "format")
ENCODE_FORMATS = ("json", "npz")
MAX_N = 256  # samples per request, unless the server is started with another bound
MAX_ENCODE = 256  # images per encode request
MAX_BODY_BYTES = 8 << 20  # a request body larger than this is refused (413) before it is read
MAX_REQUEST_PIXELS = 2048 * 2048  # an image in a request larger than this is refused before it is decoded


class Reply:
    """A response body: ``body`` bytes of ``media_type``, status 200, extra ``headers``."""

    def __init__(self, body: bytes, media_type: str, headers: dict | None = None):
        self.body, self.media_type, self.headers = body, media_type, headers or {}


def json_reply(obj) -> Reply:
    return Reply(json.dumps(obj).encode(), "application/json")


def error_body(error: Exception) -> dict:
    """What a 4xx says: the error's one sentence (its first line)."""
    text = str(error).strip().splitlines()
    return {"error": text[0] if text else type(error).__name__}


def parse_body(body: bytes, fields: tuple[str, ...], what: str) -> dict:
    """A JSON object with only the known ``fields``; InputError otherwise."""
    try:
        obj = json.loads(body or b"null")
    except json.JSONDecodeError as e:
        raise InputError(f"the {what} request body is not valid JSON ({e.msg} at character {e.pos})") from None
    except UnicodeDecodeError:
        raise InputError(f"the {what} request body is not valid JSON (not UTF-8 text)") from None
    except RecursionError:
        raise InputError(f"the {what} request body is nested too deeply to read") from None
    if not isinstance(obj, dict):
        raise InputError(f"the {what} request body must be a JSON object with some of the fields {', '.join(fields)}")
    unknown = sorted(set(obj) - set(fields))
    if unknown:
        raise InputError(f"unknown field {unknown[0]!r} in the {what} request; expected some of {', '.join(fields)}")
    return obj


def decode_base64_image(value, field: str, rt: Runtime, notes: list | None = None) -> np.ndarray:
    """A base64 string of an image file's bytes (PNG, JPEG, ...) -> the model's input [C, H, W], read as
    ``sami-rt`` reads a file (``images.decode_image``)."""
    if not isinstance(value, str):
        raise InputError(f"{field} must be a base64 string of a PNG or JPEG file, got {type(value).__name__}")
    try:
        data = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise InputError(f"{field} is not valid base64 (the bytes of a PNG or JPEG file, base64-encoded)") from None
    check_request_image(data, field)
    return decode_image(data, rt.bundle.manifest.image, notes=notes, name=field)


def check_request_image(data: bytes, field: str) -> None:
    """ImageError where a request's image is larger than MAX_REQUEST_PIXELS by its header (read before any
    decoding: a 4000x4000 PNG is refused unread; the model sees a few dozen pixels a side anyway)."""
    wh = header_size(data)
    if wh is not None and wh[0] * wh[1] > MAX_REQUEST_PIXELS:
        side = int(MAX_REQUEST_PIXELS ** 0.5)
        raise ImageError(f"{field} is {wh[0]}x{wh[1]} pixels; the server takes images of at most {side}x{side} "
                         "pixels (resize it first)")


def body_too_large(content_length: str | None, limit: int = MAX_BODY_BYTES) -> str | None:
    """The sentence refusing a request whose declared Content-Length exceeds ``limit``, or None."""
    try:
        n = int(content_length) if content_length is not None else None
    except ValueError:
        return "the request's Content-Length is not a number"
    if n is not None and n > limit:
        return f"the request body is {n / 2**20:.1f} MiB; the server takes at most {limit / 2**20:g} MiB"
    return None


def _is_number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _numbers(value, field: str, dtype) -> np.ndarray:
    """A list of numbers, or a list of such lists (JSON numbers only: a string, a boolean or null is refused,
    never cast)."""
    if not isinstance(value, list):
        raise InputError(f"{field} must be a list of numbers, got {type(value).__name__}")
    rows = value if value and all(isinstance(v, list) for v in value) else [value]
    for v in (v for row in rows for v in row):
        if not _is_number(v):
            raise InputError(f"{field} must hold numbers only, got {json.dumps(v)[:40]}")
    try:
        return np.asarray(value, dtype=dtype)
    except (ValueError, TypeError, OverflowError):
        raise InputError(f"{field} must be a list of numbers (a rectangular array) that {np.dtype(dtype).name} "
                         "holds") from None


def generate_args(obj: dict, rt: Runtime, max_n: int = MAX_N) -> tuple[dict, str, np.ndarray | None, list[str]]:
    """A parsed generate body -> (``Runtime.generate`` keyword arguments, the response format, the guide as
    the model saw it [1, C, H, W] or None, notes from reading the guide). The arguments are those of the
    library call: ``guide`` decoded to the model's input (what ``generate(guide=path)`` reads from the file),
    ``z`` and ``mask`` as arrays (a mask of integers lists dimensions, one of booleans or 0.0/1.0 is a 0/1
    vector, as in ``Runtime.generate``)."""
    fmt = obj.get("format", "png")
    if fmt not in GENERATE_FORMATS:
        raise InputError(f"format must be one of {', '.join(GENERATE_FORMATS)}, got {fmt!r}")
    n = obj.get("n", 1)
    if isinstance(n, int) and not isinstance(n, bool) and n > max_n:
        raise InputError(f"n must be at most {max_n} samples per request on this server, got {n}")
    args = {k: obj[k] for k in ("n", "steps", "sampler", "seed", "scale") if k in obj}
    if "sampler" in obj and not isinstance(obj["sampler"], str):
        raise InputError(f"sampler must be one of {', '.join(SAMPLERS)}, got {obj['sampler']!r}")
    for k in ("eta", "scale"):
        v = obj.get(k)
        if v is not None and (isinstance(v, bool) or not isinstance(v, (int, float))):
            raise InputError(f"{k} must be a number, got {v!r}")
    if obj.get("eta") is not None:
        args["eta"] = obj["eta"]
    if obj.get("interval") is not None:
        iv = obj["interval"]
        if not isinstance(iv, list) or len(iv) != 2 or not all(_is_number(v) for v in iv):
            raise InputError(f"interval must be two numbers [lo, hi], got {json.dumps(iv)[:40]}")
        args["interval"] = (float(iv[0]), float(iv[1]))  # Runtime.generate checks 0 <= lo < hi <= 1
    if "guide_mean" in obj:
        if not isinstance(obj["guide_mean"], bool):
            raise InputError(f"guide_mean must be true or false, got {obj['guide_mean']!r}")
        args["guide_mean"] = obj["guide_mean"]
    notes: list[str] = []
    guide_x = None
    if obj.get("guide") is not None:
        guide_x = decode_base64_image(obj["guide"], "guide", rt, notes)[None]
        args["guide"] = guide_x
    if obj.get("z") is not None:
        args["z"] = _numbers(obj["z"], "z", np.float32)
    if obj.get("mask") is not None:
        m = obj["mask"]
        if not isinstance(m, list) or not m:
            raise InputError("mask must be a non-empty list: latent dimensions (integers) or a 0/1 vector (booleans)")
        kinds = {type(v) for v in m}
        if not kinds <= {int, bool, float} or (bool in kinds and len(kinds) > 1):
            raise InputError("mask must hold integers (dimensions to guide) or booleans (a 0/1 vector), not a mix")
        D = rt.latent_dim
        if kinds == {int} and not all(0 <= v < D for v in m):
            bad = next(v for v in m if not 0 <= v < D)
            raise InputError(f"mask dimensions must be in 0..{D - 1}, got {str(bad)[:40]}")
        args["mask"] = np.asarray(m)
    return args, fmt, guide_x, notes


def generate_reply(s, fmt: str, guide_x: np.ndarray | None = None) -> Reply:
    """``Samples`` in the asked format: ``png`` a grid (the guide's tile first, framed and captioned, as
    ``sami-rt generate`` draws it), ``npy`` the images x [n, C, H, W] float32 in [-1, 1], ``npz`` what
    ``sami-rt generate`` writes beside its grid (x, z, seed, steps, scale), ``json`` those as lists. Notes
    (a guide unlike the training images) are in ``X-Sami-Notes`` (and ``notes`` in json)."""
    headers = {"X-Sami-Notes": " | ".join(s.notes)} if s.notes else {}
    if fmt == "png":
        return Reply(grid_png(s, guide_x), "image/png", headers)
    if fmt == "npy":
        buf = io.BytesIO()
        np.save(buf, s.x, allow_pickle=False)
        return Reply(buf.getvalue(), "application/octet-stream", headers)
    if fmt == "npz":
        z = s.z if s.z is not None else np.zeros((0,), np.float32)
        return Reply(npz_bytes({"x": s.x, "z": z, "seed": np.uint64(s.seed), "steps": s.steps,
                                "scale": s.scale if s.scale is not None else np.nan}), "application/octet-stream",
                     headers)
    return json_reply({"x": s.x.tolist(), "shape": list(s.x.shape), "z": None if s.z is None else s.z.tolist(),
                       "seed": s.seed, "steps": s.steps, "sampler": s.sampler, "scale": s.scale, "notes": s.notes})


def grid_png(s, guide_x: np.ndarray | None) -> bytes:
    imgs, marked, labels = s.images, (), None
    if guide_x is not None:
        imgs, marked, labels = np.concatenate([from_model(guide_x), imgs]), (0,), ["guide"] + [""] * len(s.x)
    grid = labelled_grid(imgs, 8, auto_zoom(*imgs.shape[1:3]), labels, marked)
    ok, buf = load_cv2().imencode(".png", grid[:, :, ::-1])
    return buf.tobytes()


def encode_inputs(obj: dict, rt: Runtime) -> tuple[np.ndarray, str]:
    """A parsed encode body (``image``: one base64 image, or ``images``: a list of them) -> model inputs
    [B, C, H, W] and the response format."""
    fmt = obj.get("format", "json")
    if fmt not in ENCODE_FORMATS:
        raise InputError(f"format must be one of {', '.join(ENCODE_FORMATS)}, got {fmt!r}")
    if ("image" in obj) == ("images" in obj):
        raise InputError("give either image (one base64 image) or images (a list of them)")
    if "image" in obj:
        return decode_base64_image(obj["image"], "image", rt)[None], fmt
    items = obj["images"]
    if not isinstance(items, list) or not 1 <= len(items) <= MAX_ENCODE:
        raise InputError(f"images must be a list of 1 to {MAX_ENCODE} base64 images")
    return np.stack([decode_base64_image(v, f"images[{i}]", rt) for i, v in enumerate(items)]), fmt


def encode_reply(mu: np.ndarray, var: np.ndarray, fmt: str) -> Reply:
    """Posterior means and variances [B, D]: json lists, or an npz (``mu``, ``var``)."""
    if fmt == "npz":
        return Reply(npz_bytes({"mu": mu, "var": var}), "application/octet-stream")
    return json_reply({"mu": mu.tolist(), "var": var.tolist()})


def info(rt: Runtime, **server) -> dict:
    """What ``GET /info`` says: the model, its sampling defaults and the server's batching settings."""
    b = rt.bundle
    return {"model": b.root.name, "image_shape": list(b.manifest.image.shape), "latent_dim": b.manifest.latent_dim, "T": b.manifest.T,
            "samplers": list(SAMPLERS), "default_steps": {s: default_steps(b, s) for s in SAMPLERS},
            "default_scale": b.manifest.sampling_scale, "default_interval": list(b.manifest.sampling_interval),
            "backend": rt.backend.name, **server}
