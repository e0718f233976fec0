"""The first hour of a new user (issue 18): what `sami-rt` prints when an output cannot be written, an option
makes no sense, a package is missing; what `info` says; what `encode`, `interpolate` and `traverse` keep.

The commands run in-process through click's CliRunner (stdout and stderr apart); where the check must come
before any work, opening the model raises, so a check made too late shows up as that error instead."""

import re
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from sami_rt.cli.main import main
from sami_rt.errors import InputError

from helpers import EXAMPLES, ROOT

GUIDE = str(EXAMPLES / "guide.png")
VIDEO = str(EXAMPLES / "moving_disk.mp4")


def invoke(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def one_error_line(r, *fragments):
    """Exit code 1, nothing on stdout, one line on stderr: 'Error: ...' holding every fragment."""
    assert isinstance(r.exception, SystemExit) and r.exit_code == 1, (r.exception, r.stderr)
    assert r.stdout == "" and r.stderr.count("\n") == 1 and r.stderr.startswith("Error: "), r.stderr
    for f in fragments:
        assert f in r.stderr, (f, r.stderr)


def snapshot(root: Path) -> dict:
    return {str(p.relative_to(root)): (p.read_bytes() if p.is_file() else None) for p in sorted(root.rglob("*"))}


@pytest.fixture
def no_model(monkeypatch):
    """Opening the model fails loudly: the checks under test must answer before it."""
    from sami_rt.runtime import Runtime

    def refuse(self, *a, **kw):
        raise AssertionError("the model was opened before the check")

    monkeypatch.setattr(Runtime, "__init__", refuse)


@pytest.fixture
def workdir(tmp_path, monkeypatch, fresh_seed):
    """A working directory holding a file named like an image (random bytes) and a directory."""
    rng = np.random.default_rng(fresh_seed)
    monkeypatch.chdir(tmp_path)
    (tmp_path / "fake.png").write_bytes(rng.bytes(int(rng.integers(1, 200))))
    (tmp_path / f"dir{rng.integers(1000)}").mkdir()
    return tmp_path


def _dir(w: Path) -> str:
    return next(p.name for p in w.iterdir() if p.is_dir())


# ------------------------------------------------------------------------------------ 1. outputs
CASES = [  # (arguments, with {d} a directory and fake.png a file; what the line says)
    (["generate", "-o", "{d}"], "{d} is a directory; name a file in it"),
    (["generate", "-o", "fake.png/x.png"], "fake.png is a file, not a directory"),
    (["generate", "-o", "out.gif"], "cannot write .gif images; name a file ending in .png, .jpg"),
    (["generate", "-o", "samples"], "cannot write extension-less images"),
    (["encode", GUIDE, "-o", "fake.png/x.npz"], "fake.png is a file, not a directory"),
    (["encode", GUIDE, "-o", "{d}"], "{d} is a directory"),
    (["encode", GUIDE, "-o", "fake.png"], "latents are written as a NumPy .npz archive"),
    (["encode", VIDEO, "--plot", "fake.png/c.png"], "--plot fake.png/c.png"),
    (["encode", VIDEO, "--plot", "c.gif"], "cannot draw .gif plots; name a file ending in .png, .pdf, .svg"),
    (["encode", GUIDE, "--plot", "c.png"], "--plot draws a video's latent trajectory"),
    (["interpolate", GUIDE, GUIDE, "-o", "{d}"], "{d} is a directory"),
    (["traverse", GUIDE, "--axis", "0", "-o", "fake.png/t.png"], "fake.png is a file, not a directory"),
    (["bench", "--json", "{d}"], "--json {d} is a directory"),
]


@pytest.mark.parametrize("args,says", CASES)
def test_outputs_that_cannot_be_written_are_refused_before_any_work(workdir, no_model, args, says):
    d = _dir(workdir)
    before = snapshot(workdir)
    r = invoke(*[a.format(d=d) for a in args])
    one_error_line(r, says.format(d=d))
    assert snapshot(workdir) == before  # nothing written, not even a temporary file


def test_a_grids_latents_are_checked_with_it(workdir, no_model):
    d = _dir(workdir)
    (workdir / d / "x.npz").mkdir()  # -o DIR/x.png would put its latents on a directory
    r = invoke("generate", "-o", f"{d}/x.png")
    one_error_line(r, f"-o {d}/x.png: its latents {d}/x.npz is a directory")


@pytest.mark.skipif(not Path("/proc/self").is_dir(), reason="no /proc here")
def test_an_unwritable_place_is_refused_before_any_work(workdir, no_model):
    for args in (["generate", "-o", "/proc/x.png"], ["encode", GUIDE, "-o", "/proc/x.npz"]):
        r = invoke(*args)
        one_error_line(r, f"{args[-1]}: cannot create files in /proc")


GRIDS = [  # the grid needs the model's tile size (32 px, zoom 3 by default): checked after opening it, before sampling
    (["interpolate", GUIDE, GUIDE, "-n", "161", "-o", "line.webp"], "the grid would be 16428 x 160 pixels, beyond WEBP's 16383"),
    (["traverse", GUIDE, "--axis", "0", "--values=" + ",".join("0" * 16), "--zoom", "32", "-o", "t.webp"], "16383 per side"),
    (["generate", "--guide", GUIDE, "-n", "600", "--zoom", "32", "-o", "big.png"], "million); ask for fewer images"),
]


@pytest.mark.parametrize("args,says", GRIDS)
def test_a_grid_too_large_for_its_format_is_refused_before_sampling(workdir, monkeypatch, args, says):
    from sami_rt.runtime import Runtime

    def refuse(self, *a, **kw):
        raise AssertionError("sampled before the grid's size was checked")

    for name in ("generate", "interpolate", "traverse"):
        monkeypatch.setattr(Runtime, name, refuse)
    before = snapshot(workdir)
    r = invoke(*args)
    assert isinstance(r.exception, SystemExit) and r.exit_code == 1, (r.exception, r.stderr)
    last = r.stderr.strip().splitlines()[-1]
    assert r.stdout == "" and last.startswith(f"Error: -o {args[-1]}: ") and says in last, r.stderr
    assert snapshot(workdir) == before


def test_the_size_check_measures_the_grid_that_is_drawn(fresh_seed):
    """grids.grid_shape (no drawing) against the shape labelled_grid draws, on random sizes, labels and titles."""
    from sami_rt.media.grids import grid_shape, labelled_grid

    rng = np.random.default_rng(fresh_seed)
    for _ in range(6):
        n, h, w, zoom, ncol = (int(v) for v in (rng.integers(1, 12), rng.integers(8, 40), rng.integers(8, 40),
                                                rng.integers(1, 4), rng.integers(1, 9)))
        labels = [f"t={v:.2f}" for v in rng.uniform(-9, 9, n)] if rng.random() < 0.6 else None
        title = "word " * int(rng.integers(0, 40)) or None
        imgs = rng.integers(0, 256, (n, h, w, 1), dtype=np.uint8)
        assert grid_shape(n, (h, w), ncol, zoom, labels, title) == labelled_grid(imgs, ncol, zoom, labels, (), title).shape[:2]


# ---------------------------------------------------------------------------------- 2. matplotlib
def test_plot_without_matplotlib_is_refused_before_encoding(workdir, no_model, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib -> ImportError
    before = snapshot(workdir)
    r = invoke("encode", VIDEO, "--plot", "c.png")
    one_error_line(r, "--plot needs matplotlib", 'pip install "sami-rt[plot]"')
    assert snapshot(workdir) == before and not (workdir / "moving_disk.npz").exists()
    extra = re.search(r'sami-rt\[(\w+)\]', r.stderr).group(1)
    setup = (ROOT / "setup.py").read_text()
    assert re.search(rf'"{extra}": \[[^\]]*"matplotlib', setup), "the extra named must install matplotlib"


def test_serve_without_ray_is_refused_in_one_line(workdir, no_model, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray -> ImportError
    r = invoke("serve", "--port", "8123")
    one_error_line(r, "sami-rt serve needs Ray Serve", 'pip install "sami-rt[ray]"')
    assert re.search(r'"ray": \[[^\]]*"ray\[data,serve\]', (ROOT / "setup.py").read_text())


def test_serve_refuses_a_missing_model_before_starting_ray(workdir, no_model):
    ray = pytest.importorskip("ray")
    r = invoke("serve", "--model", "nowhere-such-model")
    one_error_line(r, "model bundle nowhere-such-model is not a directory")
    assert not ray.is_initialized()


def test_plot_format_follows_its_extension(workdir):
    pytest.importorskip("matplotlib")
    r = invoke("encode", VIDEO, "--every", "4", "--plot", "c.svg", "--device", "cpu")
    assert r.exit_code == 0, r.stderr
    assert b"<svg" in (workdir / "c.svg").read_bytes()[:500] and (workdir / "moving_disk.npz").is_file()


# ----------------------------------------------------------------------------- 3. image formats
MAGIC = {".png": b"\x89PNG", ".jpg": b"\xff\xd8\xff", ".jpeg": b"\xff\xd8\xff", ".bmp": b"BM", ".webp": b"RIFF",
         ".tif": (b"II*\x00", b"MM\x00*"), ".tiff": (b"II*\x00", b"MM\x00*")}


def test_a_grid_is_written_in_the_format_its_name_says(workdir, fresh_seed):
    import cv2

    rng = np.random.default_rng(fresh_seed)
    seed = int(rng.integers(2**31))
    exts = [".png"] + list(rng.choice([".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff"], 3, replace=False))
    for ext in exts:
        r = invoke("generate", "-n", "2", "--steps", "2", "--seed", seed, "-o", f"g{ext}", "--device", "cpu")
        assert r.exit_code == 0, r.stderr
        head = (workdir / f"g{ext}").read_bytes()[:4]
        assert head.startswith(MAGIC[ext]) if isinstance(MAGIC[ext], bytes) else head in MAGIC[ext]
    png = cv2.imread("g.png", cv2.IMREAD_UNCHANGED)
    assert png.std() > 0
    for ext in exts[1:]:
        got = cv2.imread(f"g{ext}", cv2.IMREAD_UNCHANGED)
        if got.ndim == 3 and png.ndim == 2:  # WebP keeps grey as three equal channels
            assert (got == got[:, :, :1]).all()
            got = got[:, :, 0]
        assert got.shape == png.shape
        if ext in (".jpg", ".jpeg"):  # lossy, at quality 95
            assert np.abs(got.astype(int) - png).mean() < 4
        else:  # lossless
            np.testing.assert_array_equal(got, png)


def test_write_image_refuses_what_it_cannot_write(tmp_path, fresh_seed):
    from sami_rt.errors import ImageError
    from sami_rt.media.images import write_image

    img = np.random.default_rng(fresh_seed).integers(0, 256, (5, 7, 3), dtype=np.uint8)
    with pytest.raises(ImageError, match=r"\.gif is not one of \.png"):
        write_image(tmp_path / "x.gif", img)
    assert not any(tmp_path.iterdir())


# ---------------------------------------------------------------------------------- 4. the scale
@pytest.mark.parametrize("value", ["-1", "0", "nan", "inf", "-inf", "-0.5"])
def test_a_scale_that_is_not_positive_is_refused_at_once(workdir, no_model, value):
    for cmd in (["generate"], ["interpolate", GUIDE, GUIDE], ["traverse", GUIDE, "--axis", "0"]):
        r = invoke(*cmd, "--scale", value)
        one_error_line(r, "--scale must be a finite number above 0")
        assert not (workdir / "samples.png").exists()


@pytest.mark.parametrize("value", ["1000.5", "1e6", "1e30"])
def test_a_scale_beyond_any_use_is_refused_before_the_model_loads(workdir, no_model, value):
    for cmd in (["generate"], ["interpolate", GUIDE, GUIDE], ["traverse", GUIDE, "--axis", "0"]):
        r = invoke(*cmd, "--scale", value)
        one_error_line(r, "is above 1000, where samples are nothing but black and white pixels")
        assert not (workdir / "samples.png").exists()


def test_a_scale_far_above_the_models_gets_a_note(rt, fresh_seed):
    rng = np.random.default_rng(fresh_seed)
    s0, z = rt.bundle.manifest.sampling_scale, rng.normal(size=rt.latent_dim)
    far = float(rng.uniform(3.01 * s0, 1000))
    assert any(f"guidance scale {far:g} is more than 3x" in n for n in rt.generate(z=z, n=1, steps=2, scale=far).notes)
    near = float(rng.uniform(0.1, 2.99) * s0)
    assert not any("more than 3x" in n for n in rt.generate(z=z, n=1, steps=2, scale=near).notes)
    assert not rt.generate(n=1, steps=2, scale=far).notes  # unguided: the scale does nothing
    with pytest.raises(InputError, match=r"is above 1000"):
        rt.generate(z=z, n=1, steps=2, scale=float(rng.uniform(1000.01, 1e30)))


def test_runtime_generate_refuses_a_scale_that_is_not_positive(rt, fresh_seed):
    rng = np.random.default_rng(fresh_seed)
    for s in (0, 0.0, -float(rng.uniform(1e-6, 10)), -int(rng.integers(1, 100))):
        with pytest.raises(InputError, match="scale must be a finite number above 0"):
            rt.generate(z=rng.normal(size=rt.latent_dim), n=1, steps=2, scale=s)


# ------------------------------------------------------------------------------------ 5. axes
def test_axes_on_a_folder_without_images_prints_the_error_alone(workdir, no_model, fresh_seed):
    rng = np.random.default_rng(fresh_seed)
    d = workdir / _dir(workdir)
    for i in range(int(rng.integers(1, 4))):
        (d / f"notes{i}.txt").write_bytes(rng.bytes(32))
    one_error_line(invoke("axes", d), f"folder {d} holds no images")
    one_error_line(invoke("axes", workdir / "missing"), "does not exist")


# ----------------------------------------------------------------------------------- 8. pointers
def test_a_video_where_an_image_is_expected_points_at_encode(workdir, no_model):
    for args in (["generate", "--guide", VIDEO], ["interpolate", GUIDE, VIDEO], ["traverse", VIDEO, "--axis", "0"],
                 ["axes", VIDEO]):
        one_error_line(invoke(*args), f"{VIDEO} is a video", f"sami-rt encode {VIDEO}")


def test_tensorrt_where_there_is_none_says_what_to_install(workdir):
    import onnxruntime as ort

    if "TensorrtExecutionProvider" in ort.get_available_providers():
        pytest.skip("this onnxruntime has TensorRT")
    before = snapshot(workdir)
    r = invoke("generate", "-n", "1", "--device", "tensorrt")
    one_error_line(r, "device 'tensorrt' is not available here", 'pip install "sami-rt[trt]"', "--device cpu")
    assert snapshot(workdir) == before


# ------------------------------------------------------------------------------- 9. what is kept
def test_encode_a_folder_labels_its_rows_and_keeps_the_file_names(workdir, rt, fresh_seed):
    import cv2

    rng = np.random.default_rng(fresh_seed)
    d = workdir / "imgs"
    d.mkdir()
    names = sorted({f"{rng.integers(10**6):06d}_{i}.png" for i in range(int(rng.integers(2, 11)))})
    for n in names:
        h, w = (int(v) for v in rng.integers(20, 60, 2))
        cv2.imwrite(str(d / n), rng.integers(0, 256, (h, w), dtype=np.uint8))
    (d / "readme.txt").write_text("not an image")
    r = invoke("encode", d, "-o", "f.npz", "--device", "cpu")
    assert r.exit_code == 0, r.stderr
    z = np.load(workdir / "f.npz")
    assert [Path(f).name for f in z["files"]] == names and z["mu"].shape == (len(names), rt.latent_dim)
    for i in rng.choice(len(names), min(3, len(names)), replace=False):
        np.testing.assert_allclose(z["mu"][i], rt.encode(str(d / names[i]))[0][0], rtol=1e-5, atol=1e-5)
    rows = [ln for ln in r.stdout.splitlines() if ln.startswith("  ") and " mu [" in ln]
    assert [ln.split()[0] for ln in rows] == names[:8]
    if len(names) > 8:
        assert f"... and {len(names) - 8} more in f.npz" in r.stdout


def test_interpolate_and_traverse_keep_their_latents_beside_the_grid(workdir, rt, fresh_seed):
    rng = np.random.default_rng(fresh_seed)
    n, seed = int(rng.integers(2, 5)), int(rng.integers(2**31))
    light = str(EXAMPLES / "guide_light.png")
    r = invoke("interpolate", GUIDE, light, "-n", n, "--steps", "2", "--seed", seed, "-o", "line.jpg", "--device", "cpu")
    assert r.exit_code == 0, r.stderr
    assert r.stdout.strip().endswith("-> line.jpg, latents -> line.npz")
    z = np.load(workdir / "line.npz")
    mu = rt.encode([GUIDE, light])[0]
    t = np.linspace(0, 1, n, dtype=np.float32)
    np.testing.assert_allclose(z["t"], t)
    np.testing.assert_allclose(z["z"], (1 - t[:, None]) * mu[0] + t[:, None] * mu[1], rtol=1e-5, atol=1e-5)
    assert z["x"].shape == (n, *rt.bundle.manifest.image.shape) and int(z["seed"]) == seed and int(z["steps"]) == 2
    axis = int(rng.integers(rt.latent_dim))
    vals = np.round(rng.normal(size=3) * 2, 2)
    r = invoke("traverse", GUIDE, "--axis", axis, f"--values={','.join(map(str, vals))}", "--unit", "value",
               "--steps", "2", "-o", "walk.png", "--device", "cpu")
    assert r.exit_code == 0, r.stderr
    z = np.load(workdir / "walk.npz")
    assert int(z["axis"]) == axis and str(z["unit"]) == "value"
    np.testing.assert_allclose(z["values"], vals)
    np.testing.assert_allclose(z["z"][:, axis], vals, rtol=1e-6)
    np.testing.assert_allclose(np.delete(z["z"], axis, 1), np.repeat(np.delete(rt.encode(GUIDE)[0], axis, 1), 3, 0),
                               rtol=1e-5, atol=1e-5)
