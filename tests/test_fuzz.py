"""Property-based fuzzing (hypothesis) of what users hand the runtime: image bytes, video bytes, manifests.

The property: the process never crashes, and every failure is the project's own error class with a
message. Inputs are mutations of valid files (bytes flipped, cut, inserted), which reach deeper into the
decoders than random bytes do, plus arbitrary bytes and arbitrary JSON.
"""

import json
import shutil
import tempfile
from pathlib import Path

import numpy as np
import pytest

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from sami_rt.contract.bundle import MANIFEST, BundleError, read_bundle  # noqa: E402
from sami_rt.media.images import ImageError, load_cv2  # noqa: E402
from sami_rt.runtime import DEFAULT_MODEL, InputError, Runtime  # noqa: E402
from sami_rt.video.encode import VideoError  # noqa: E402
from sami_rt.media.images import write_video  # noqa: E402

cv2 = load_cv2()
SETTINGS = dict(deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
                derandomize=False)
_RT = None


def runtime():
    global _RT
    if _RT is None:
        _RT = Runtime(device="cpu")
    return _RT


def _seed_files() -> dict[str, bytes]:
    rng = np.random.default_rng(0)
    img = rng.integers(0, 255, (24, 20, 3), dtype=np.uint8)
    out = {}
    for ext in (".png", ".jpg", ".bmp"):
        ok, buf = cv2.imencode(ext, img)
        out[ext] = buf.tobytes()
    return out


SEEDS = _seed_files()


@st.composite
def mutated(draw, seeds: dict[str, bytes]):
    ext = draw(st.sampled_from(sorted(seeds)))
    data = bytearray(seeds[ext])
    for _ in range(draw(st.integers(0, 6))):
        op = draw(st.sampled_from(["flip", "cut", "insert", "zero"]))
        if not data:
            break
        i = draw(st.integers(0, len(data) - 1))
        if op == "flip":
            data[i] ^= draw(st.integers(1, 255))
        elif op == "cut":
            del data[i:]
        elif op == "insert":
            data[i:i] = draw(st.binary(min_size=1, max_size=32))
        else:
            data[i : i + 16] = bytes(len(data[i : i + 16]))
    return ext, bytes(data)


def _check_image(ext: str, data: bytes):
    with tempfile.TemporaryDirectory() as d:
        p = Path(d) / f"fuzz{ext}"
        p.write_bytes(data)
        try:
            mu, var = runtime().encode(str(p))
        except (ImageError, InputError) as e:
            assert str(e) and "\n" not in str(e)
            return
        assert mu.shape == (1, runtime().latent_dim) and np.all(np.isfinite(mu)) and np.all(var > 0)


@settings(max_examples=150, **SETTINGS)
@given(mutated(SEEDS))
def test_mutated_image_files(case):
    _check_image(*case)


@settings(max_examples=50, **SETTINGS)
@given(st.sampled_from([".png", ".jpg", ".bmp", ".webp", ".tif"]), st.binary(max_size=2048))
def test_arbitrary_bytes_as_images(ext, data):
    _check_image(ext, data)


def _seed_video() -> bytes:
    with tempfile.TemporaryDirectory() as d:
        p = Path(d) / "v.avi"
        rng = np.random.default_rng(1)
        write_video(p, (rng.integers(0, 255, (24, 32, 3), dtype=np.uint8) for _ in range(6)), fourcc="MJPG")
        return p.read_bytes()


@settings(max_examples=40, **SETTINGS)
@given(mutated({".avi": _seed_video()}))
def test_mutated_videos(case):
    ext, data = case
    with tempfile.TemporaryDirectory() as d:
        p = Path(d) / f"fuzz{ext}"
        p.write_bytes(data)
        try:
            v = runtime().encode_video(p)
        except VideoError as e:
            assert str(e) and "\n" not in str(e)
            return
        assert len(v.frames) >= 1 and v.mu.shape == (len(v.frames), runtime().latent_dim) and np.all(np.isfinite(v.mu))


JSON = st.recursive(st.none() | st.booleans() | st.integers(-2**40, 2**40) | st.floats(allow_nan=True) | st.text(max_size=12),
                    lambda kids: st.lists(kids, max_size=4) | st.dictionaries(st.text(max_size=10), kids, max_size=4),
                    max_leaves=12)


@pytest.fixture(scope="module")
def bundle_copy(tmp_path_factory):
    d = tmp_path_factory.mktemp("fuzzbundle") / "b"
    shutil.copytree(DEFAULT_MODEL, d)
    return d, json.loads((d / MANIFEST).read_text())


def _check_manifest(d: Path, original: dict, data: bytes) -> None:
    """Read the bundle with ``data`` as its manifest: a valid bundle or a one-line BundleError; then restore."""
    (d / MANIFEST).write_bytes(data)
    try:
        read_bundle(d, verify=False)
    except BundleError as e:
        assert str(e) and "\n" not in str(e)
    finally:
        (d / MANIFEST).write_text(json.dumps(original))


@settings(max_examples=150, **SETTINGS)
@given(path=st.lists(st.sampled_from(["image", "schedule", "graphs", "encoder", "inputs", 0, "shape", "file",
                                      "sha256", "abar", "latent_dim", "format_version", "channels", "reference",
                                      "sampling", "scale"]),
                     min_size=1, max_size=4), value=JSON)
def test_mutated_manifests(bundle_copy, path, value):
    d, original = bundle_copy
    m = json.loads(json.dumps(original))
    node = m
    for key in path[:-1]:  # walk as far as the path exists, then replace there
        nxt = node[key] if isinstance(node, dict) and key in node else (
            node[key] if isinstance(node, list) and isinstance(key, int) and key < len(node) else None)
        if not isinstance(nxt, (dict, list)):
            break
        node = nxt
    last = path[-1]
    if isinstance(node, dict) and isinstance(last, str):
        node[last] = value
    elif isinstance(node, list) and node:
        node[0] = value
    _check_manifest(d, original, json.dumps(m).encode())


@settings(max_examples=60, **SETTINGS)
@given(st.binary(max_size=512) | JSON.map(lambda v: json.dumps(v).encode()))
def test_arbitrary_manifest_files(bundle_copy, data):
    d, original = bundle_copy
    _check_manifest(d, original, data)
