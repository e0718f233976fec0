"""Bad inputs, untrusted bundles and concurrent use get a clear answer (docs/robustness.md lists every case)."""

import json
import shutil
import struct
import subprocess
import sys
import threading
import zlib
from pathlib import Path

import numpy as np
import pytest

from sami_rt.contract.bundle import MANIFEST, BundleError, read_bundle, sha256_file
from sami_rt.media.images import MAX_PIXELS, ImageError, load_cv2
from sami_rt.runtime import DEFAULT_MODEL, InputError, Runtime
from sami_rt.sampling.loop import SamplingError
from sami_rt.video.encode import VideoError
from sami_rt.media.images import write_video

cv2 = load_cv2()
ROOT = Path(__file__).resolve().parent.parent


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def palette_png(path: Path, idx: np.ndarray, palette: np.ndarray) -> None:
    """A colour-type-3 (palette) PNG, written by hand: OpenCV cannot write one."""
    h, w = idx.shape
    raw = b"".join(b"\x00" + idx[r].astype(np.uint8).tobytes() for r in range(h))
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 3, 0, 0, 0))
                     + _png_chunk(b"PLTE", palette.astype(np.uint8).tobytes()) + _png_chunk(b"IDAT", zlib.compress(raw))
                     + _png_chunk(b"IEND", b""))


# --------------------------------------------------------------------------------------------- images
def test_image_files_that_are_not_images(rt, tmp_path):
    (tmp_path / "notes.png").write_text("not an image at all")
    (tmp_path / "empty.png").write_bytes(b"")
    (tmp_path / "folder.png").mkdir()
    cases = {tmp_path / "missing.png": "does not exist", tmp_path / "notes.png": "is not an image OpenCV can read",
             tmp_path / "empty.png": "is empty"}
    for path, msg in cases.items():
        with pytest.raises(ImageError, match=msg):
            rt.encode(str(path))
    with pytest.raises(InputError, match="holds no images"):  # a folder is a set of images: this one is empty
        rt.encode(str(tmp_path / "folder.png"))
    (tmp_path / "folder.png" / "a.png").write_bytes((tmp_path / "notes.png").read_bytes())
    with pytest.raises(ImageError, match="a.png is not an image"):
        rt.generate(guide=str(tmp_path / "folder.png"), steps=2)


@pytest.mark.parametrize("ext", ["png", "jpg"])
def test_truncated_images_are_refused_not_half_decoded(rt, tmp_path, ext, fresh_seed):
    img = np.random.default_rng(fresh_seed).integers(0, 255, (64, 64), dtype=np.uint8)
    cv2.imwrite(str(tmp_path / f"full.{ext}"), img)
    data = (tmp_path / f"full.{ext}").read_bytes()
    (tmp_path / f"cut.{ext}").write_bytes(data[: len(data) * 2 // 3])
    rt.encode(str(tmp_path / f"full.{ext}"))
    with pytest.raises(ImageError, match="truncated"):
        rt.encode(str(tmp_path / f"cut.{ext}"))


def test_enormous_images_are_refused_before_decoding(rt, tmp_path):
    side = int(np.sqrt(MAX_PIXELS)) + 10
    # a valid header for a huge image and almost no data: decoding it would allocate side^2 bytes
    head = b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", struct.pack(">IIBBBBB", side, side, 8, 0, 0, 0, 0))
    (tmp_path / "huge.png").write_bytes(head + _png_chunk(b"IDAT", zlib.compress(b"\x00" * 100)) + _png_chunk(b"IEND", b""))
    with pytest.raises(ImageError, match=f"{side}x{side} pixels"):
        rt.encode(str(tmp_path / "huge.png"))


def test_images_wider_than_opencv_allows_are_refused_in_one_sentence(rt, tmp_path, fresh_seed):
    """A BMP whose header claims 2^20 + 20 x 24 pixels (found by the fuzz test): within the pixel cap, but
    OpenCV's decoder asserts on its width; the runtime refuses it from the header, as an ImageError."""
    w = (1 << 20) + 20
    head = b"BM" + struct.pack("<IHHI", 1500, 0, 0, 54) + struct.pack("<IiiHHIIiiII", 40, w, 24, 1, 24, 0, 0, 0, 0, 0, 0)
    (tmp_path / "wide.bmp").write_bytes(head + np.random.default_rng(fresh_seed).integers(0, 256, 1446, dtype=np.uint8).tobytes())
    with pytest.raises(ImageError, match=f"{w}x24 pixels; images wider or taller than {1 << 20} pixels"):
        rt.encode(str(tmp_path / "wide.bmp"))


def test_odd_pixel_formats_are_converted_and_said(rt, tmp_path, fresh_seed):
    rng = np.random.default_rng(fresh_seed)
    grey = rng.integers(0, 255, (32, 32), dtype=np.uint8)
    cv2.imwrite(str(tmp_path / "deep.png"), grey.astype(np.uint16) * 257)
    palette_png(tmp_path / "pal.png", grey // 16, np.repeat(np.arange(16)[:, None] * 17, 3, axis=1))
    cv2.imwrite(str(tmp_path / "rgba.png"), np.dstack([grey, grey, grey, np.full_like(grey, 255)]))
    cv2.imwrite(str(tmp_path / "big.png"), cv2.resize(grey, (96, 64), interpolation=cv2.INTER_NEAREST))
    want = rt.load_images(grey)
    for name, note in (("deep.png", "16-bit"), ("pal.png", "grey"), ("rgba.png", "alpha channel dropped"),
                       ("big.png", "96x64 centre-cropped and resized to 32x32")):
        notes = []
        x = rt.load_images(str(tmp_path / name), notes)
        assert x.shape == (1, 1, 32, 32) and any(note in n for n in notes), (name, notes)
        if name == "pal.png":  # 16 grey levels
            assert np.abs(x - rt.load_images((grey // 16 * 17).astype(np.uint8))).max() < 1e-6
        elif name != "big.png":
            assert np.abs(x - want).max() <= 2 / 127.5 + 1e-6, name  # the same picture


def test_non_finite_arrays_are_refused(rt, fresh_seed):
    rng = np.random.default_rng(fresh_seed)
    x = rng.uniform(-1, 1, (2, 1, 32, 32)).astype(np.float32)
    x[1, 0, 3, 4] = np.nan
    with pytest.raises(InputError, match="NaN"):
        rt.encode(x)
    pix = rng.uniform(0, 255, (32, 32))
    pix[0, 0] = np.inf
    with pytest.raises(ImageError, match="NaN or infinite"):
        rt.encode(pix)
    with pytest.raises(InputError, match="NaN"):
        rt.generate(z=np.r_[0.0, np.inf, np.ones(rt.latent_dim - 2)], n=1, steps=2)
    D = rt.latent_dim
    with pytest.raises(InputError, match=rf"z must have shape \[1, {D}\] \(or \[{D}\]\), got \[{D + 1}\]"):
        rt.generate(z=np.ones(D + 1), n=1, steps=2)  # a latent of the wrong length: one sentence, no numpy error


# --------------------------------------------------------------------------------------------- videos
def _avi(path: Path, frames: int, seed: int, size=(48, 40)):
    rng = np.random.default_rng(seed)
    write_video(path, (rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8) for _ in range(frames)),
                fourcc="MJPG")


def test_videos_that_cannot_be_read(rt, tmp_path):
    (tmp_path / "text.mp4").write_text("no video here")
    with pytest.raises(VideoError, match="does not exist"):
        rt.encode_video(tmp_path / "missing.mp4")
    with pytest.raises(VideoError, match="not a video OpenCV can open|no frames"):
        rt.encode_video(tmp_path / "text.mp4")
    with pytest.raises(VideoError, match="not a file"):
        rt.encode_video(tmp_path)


def test_a_truncated_video_keeps_the_frames_before_the_cut(rt, tmp_path, fresh_seed):
    _avi(tmp_path / "full.avi", 40, fresh_seed)
    data = (tmp_path / "full.avi").read_bytes()
    (tmp_path / "cut.avi").write_bytes(data[: len(data) // 2])
    full = rt.encode_video(tmp_path / "full.avi")
    assert len(full.frames) == 40 and full.stopped_at is None
    cut = rt.encode_video(tmp_path / "cut.avi")
    assert 5 <= len(cut.frames) < 40
    if cut.stopped_at is not None:  # the container still declares 40 frames
        assert cut.stopped_at == len(cut.frames)
    k = len(cut.frames) - 1  # the frame at the cut itself may be partly decoded
    np.testing.assert_allclose(cut.mu[:k], full.mu[:k], atol=1e-5)


def test_an_mp4_cut_before_its_index_is_called_truncated(rt, tmp_path, fresh_seed, capfd):
    """OpenCV's MP4 writer puts the index ('moov') last: a copy cut short has none, no frame can be found,
    and the error says the file looks truncated, before FFmpeg prints its own lines about it."""
    rng = np.random.default_rng(fresh_seed)
    write_video(tmp_path / "full.mp4", (rng.integers(0, 255, (40, 48, 3), dtype=np.uint8) for _ in range(30)))
    data = (tmp_path / "full.mp4").read_bytes()
    assert data.rfind(b"moov") > len(data) // 2  # the index sits at the end
    assert len(rt.encode_video(tmp_path / "full.mp4").frames) == 30
    capfd.readouterr()
    for cut in (len(data) // 2, data.rfind(b"moov") + 20):  # before the index, inside it
        (tmp_path / "cut.mp4").write_bytes(data[:cut])
        with pytest.raises(VideoError, match=r"cut\.mp4 looks truncated: .*without its index"):
            rt.encode_video(tmp_path / "cut.mp4")
    assert "moov atom not found" not in capfd.readouterr().err


def _grey_avi(path: Path, fourcc: str, frames: int, seed: int, size=(64, 48)):
    """A grey AVI of smooth random fields: MJPG decodes to full-range yuvj420p, XVID to yuv420p."""
    rng = np.random.default_rng(seed)
    field = cv2.resize(rng.integers(0, 256, (6, 8), dtype=np.uint8), (2 * size[0], 2 * size[1]), interpolation=cv2.INTER_CUBIC)
    write_video(path, (field[k : k + size[1], 2 * k : 2 * k + size[0]] for k in range(frames)), fourcc=fourcc)


def test_a_full_range_mjpeg_video_is_read_as_bgr(rt, tmp_path, fresh_seed):
    """MJPEG decodes to full-range yuvj420p, which OpenCV reports with yuv420p's pixel format: the first
    frame's check sees the luma is not video range, and the BGR route runs."""
    _grey_avi(tmp_path / "m.avi", "MJPG", 8, fresh_seed)
    v = rt.encode_video(tmp_path / "m.avi")
    assert not v.luma and len(v.frames) == 8
    w = rt.encode_video(tmp_path / "m.avi", allow_luma=False)
    np.testing.assert_allclose(v.mu, w.mu, rtol=1e-5, atol=1e-5)


def test_a_truncated_video_read_as_luma_planes_keeps_the_frames_before_the_cut(rt, tmp_path, fresh_seed):
    from tests.helpers import write_y4m

    rng = np.random.default_rng(fresh_seed)
    field = cv2.resize(rng.integers(16, 236, (6, 8), dtype=np.uint8), (128, 96), interpolation=cv2.INTER_CUBIC)
    write_y4m(tmp_path / "full.y4m", [np.ascontiguousarray(field[k : k + 48, 2 * k : 2 * k + 64]) for k in range(30)])
    data = (tmp_path / "full.y4m").read_bytes()
    (tmp_path / "cut.y4m").write_bytes(data[: len(data) // 2])  # the cut falls inside frame 15
    full, cut = rt.encode_video(tmp_path / "full.y4m"), rt.encode_video(tmp_path / "cut.y4m")
    assert full.luma and cut.luma and len(full.frames) == 30 and 5 <= len(cut.frames) < 30
    if cut.stopped_at is not None:
        assert cut.stopped_at == len(cut.frames)
    n = len(cut.frames)
    np.testing.assert_allclose(cut.mu, full.mu[:n], atol=1e-5)  # raw frames: no partly decoded one
    bgr = rt.encode_video(tmp_path / "cut.y4m", allow_luma=False)
    np.testing.assert_array_equal(bgr.frames, cut.frames)


def test_a_one_frame_video_has_undefined_curvature(rt, tmp_path, fresh_seed):
    _avi(tmp_path / "one.avi", 1, fresh_seed)
    v = rt.encode_video(tmp_path / "one.avi")
    assert len(v.frames) == 1 and v.mean_latent_curvature is None and v.mean_pixel_curvature is None
    r = subprocess.run([sys.executable, "-m", "sami_rt.cli.main", "encode", str(tmp_path / "one.avi"), "-o",
                        str(tmp_path / "one.npz"), "--device", "cpu"], capture_output=True, text=True)
    assert r.returncode == 0 and "undefined (fewer than 3 frames)" in r.stdout


# --------------------------------------------------------------------------------------------- numerics
def test_a_non_finite_step_names_the_step_and_the_backend(tmp_path):
    rt = Runtime(device="cpu")
    real = rt.backend.guided_eps

    def bad(x_t, t, z, mask, scale):
        out = real(x_t, t, z, mask, scale)
        if t[0] < 200:  # late in the loop
            out[0, 0, 0, 0] = np.nan
        return out

    rt.backend.guided_eps = bad
    with pytest.raises(SamplingError, match=r"sampling step \d+ produced 1 non-finite values \(backend: onnxruntime"):
        rt.generate(z=np.zeros(rt.latent_dim), n=2, steps=10, sampler="ddim")


# --------------------------------------------------------------------------------------------- bundles
def test_an_onnx_file_that_is_not_the_declared_graph(tmp_path):
    dst = tmp_path / "b"
    shutil.copytree(DEFAULT_MODEL, dst)
    m = json.loads((dst / MANIFEST).read_text())
    shutil.copy(dst / m["graphs"]["denoiser"]["file"], dst / m["graphs"]["encoder"]["file"])
    m["graphs"]["encoder"]["sha256"] = sha256_file(dst / m["graphs"]["encoder"]["file"])  # a consistent lie
    (dst / MANIFEST).write_text(json.dumps(m))
    read_bundle(dst)  # the manifest itself is well formed ...
    with pytest.raises(BundleError, match="is not the declared encoder graph"):
        Runtime(dst, device="cpu")  # ... but the file is another graph
    r = subprocess.run([sys.executable, "-m", "sami_rt.cli.main", "info", "--model", str(dst), "--device", "cpu"],
                       capture_output=True, text=True)
    assert r.returncode == 1 and "is not the declared encoder graph" in r.stderr and "Traceback" not in r.stderr


def test_a_gpu_device_where_there_is_none():
    import onnxruntime as ort

    if "CUDAExecutionProvider" in ort.get_available_providers():
        pytest.skip("this onnxruntime has a CUDA provider")
    r = subprocess.run([sys.executable, "-m", "sami_rt.cli.main", "generate", "--device", "cuda"], capture_output=True,
                       text=True)
    assert r.returncode == 1 and "needs onnxruntime's CUDAExecutionProvider" in r.stderr
    r = subprocess.run([sys.executable, "-m", "sami_rt.cli.main", "info", "--device", "cuda"], capture_output=True, text=True)
    assert r.returncode == 0 and "backend: none for --device cuda: device 'cuda' needs onnxruntime's" in r.stdout  # info reports it
    assert "CPUExecutionProvider" in Runtime(device="auto").backend.name  # auto falls back


# --------------------------------------------------------------------------------------------- threads
def test_one_runtime_from_several_threads_equals_sequential_use(rt, fresh_seed):
    seeds = [int(s) for s in np.random.default_rng(fresh_seed).integers(0, 2**31, 6)]
    guide = str(ROOT / "examples" / "guide.png")
    want = {s: rt.generate(guide=guide, n=3, steps=8, sampler="ddpm", seed=s).x for s in seeds}
    got, errors = {}, []

    def work(s):
        try:
            got[s] = rt.generate(guide=guide, n=3, steps=8, sampler="ddpm", seed=s).x
        except Exception as e:  # pragma: no cover - reported below
            errors.append(e)

    threads = [threading.Thread(target=work, args=(s,)) for s in seeds]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    for s in seeds:
        np.testing.assert_array_equal(got[s], want[s])


def test_engines_for_another_tensorrt_or_gpu_are_skipped_and_said(tmp_path, fresh_seed):
    dst = tmp_path / "b"
    shutil.copytree(DEFAULT_MODEL, dst)
    m = json.loads((dst / MANIFEST).read_text())
    (dst / "guided_eps.plan").write_bytes(np.random.default_rng(fresh_seed).bytes(256))
    m["engines"] = {"guided_eps": {"file": "guided_eps.plan", "onnx": "guided_eps.onnx", "tensorrt": "0.0.1",
                                   "gpu": "A GPU from elsewhere", "precision": "float32",
                                   "batch_profile": [1, 16, 256], "sha256": sha256_file(dst / "guided_eps.plan")}}
    (dst / MANIFEST).write_text(json.dumps(m))
    from sami_rt.backends.tensorrt import usable_engines

    engines, why = usable_engines(read_bundle(dst))
    assert engines == {} and why  # no tensorrt here, or another version/GPU: a reason either way
    rt = Runtime(dst, device="auto")
    assert rt.backend.notes and rt.backend.notes[0].startswith("the bundle's TensorRT engines are skipped: ")
    r = subprocess.run([sys.executable, "-m", "sami_rt.cli.main", "info", "--model", str(dst)], capture_output=True, text=True)
    assert r.returncode == 0 and "note: the bundle's TensorRT engines are skipped" in r.stderr


# --------------------------------------------------------------------------------------------- outputs
def test_a_failed_write_leaves_the_old_output_and_no_temporary_file(tmp_path):
    from sami_rt.media.files import atomic_path, atomic_write_bytes, write_npz

    out = tmp_path / "latents.npz"
    write_npz(out, mu=np.arange(3.0))
    before = out.read_bytes()
    with pytest.raises(RuntimeError, match="disk full"):
        with atomic_path(out) as tmp:
            Path(tmp).write_bytes(b"half of a file")
            raise RuntimeError("disk full")
    assert out.read_bytes() == before and [p.name for p in tmp_path.iterdir()] == ["latents.npz"]
    atomic_write_bytes(out, b"new")
    assert out.read_bytes() == b"new" and [p.name for p in tmp_path.iterdir()] == ["latents.npz"]


def test_a_cli_run_that_fails_writes_nothing(tmp_path):
    out = tmp_path / "samples.png"
    r = subprocess.run([sys.executable, "-m", "sami_rt.cli.main", "generate", "--guide", str(tmp_path / "missing.png"),
                        "-o", str(out), "--device", "cpu"], capture_output=True, text=True)
    assert r.returncode == 1 and not any(tmp_path.iterdir())
