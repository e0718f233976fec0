"""Videos on the default model: encode_video's threaded pipeline against encoding frame by frame, the luma-plane
route and its check, capture and thread clean-up, curvature and straightness, the CLI's encode."""

import json

import numpy as np
import pytest

from sami_rt.runtime import Runtime
from sami_rt.video.trajectory import angles
from sami_rt.media.images import write_video
from tests.helpers import EXAMPLES, run_cli, write_y4m


def test_curvature_of_known_trajectories(fresh_seed):
    t = np.linspace(0, 1, 10)[:, None]
    line = np.c_[t, 2 * t, -t]
    assert np.allclose(angles(line), 0, atol=1e-6)
    square = np.array([[0, 0], [1, 0], [1, 1], [0, 1], [0, 0]], float)
    assert np.allclose(angles(square), 90)
    zigzag = np.array([[0, 0], [1, 0], [0, 0]], float)
    assert np.allclose(angles(zigzag), 180)
    from sami_rt.video.trajectory import straightness

    assert straightness(angles(line)) == pytest.approx(1.0)
    assert straightness(angles(square)) == pytest.approx(0.0, abs=1e-12)
    assert straightness(angles(zigzag)) == pytest.approx(-1.0)
    assert straightness(np.array([np.nan])) is None
    rng = np.random.default_rng(fresh_seed)
    p = rng.normal(size=(12, 5))
    v = np.diff(p, axis=0)
    cos = [(a @ b) / np.linalg.norm(a) / np.linalg.norm(b) for a, b in zip(v[:-1], v[1:])]
    assert straightness(angles(p)) == pytest.approx(np.mean(cos), rel=1e-9)  # Niu et al.'s mean cosine



def test_encode_video_streams_every_frame(rt):
    D = rt.latent_dim
    truth = json.loads((EXAMPLES / "moving_disk.json").read_text())
    v = rt.encode_video(EXAMPLES / "moving_disk.mp4", every=1, batch=7)
    assert len(v.frames) == truth["frames"] and v.mu.shape == (truth["frames"], D) and v.stopped_at is None
    assert len(v.latent_curvature) == len(v.pixel_curvature) == truth["frames"] - 2
    v2 = rt.encode_video(EXAMPLES / "moving_disk.mp4", every=5, batch=64)
    np.testing.assert_array_equal(v2.frames, np.arange(0, truth["frames"], 5))
    np.testing.assert_allclose(v2.mu, v.mu[::5], atol=1e-5)


def _colour_video(path, frames: int, seed: int, size=(640, 480), grey: bool = False):
    """A colour mp4 of smooth random colour fields drifting across the frame (``grey``: grey fields, written
    as a grey video, so that the decoded chroma is exactly neutral); returns the frames decoded to BGR."""
    import cv2

    W, H = size
    rng = np.random.default_rng(seed)
    field = cv2.resize(rng.integers(0, 256, (12, 16, 3), dtype=np.uint8), (2 * W, 2 * H), interpolation=cv2.INTER_CUBIC)
    if grey:
        field = cv2.cvtColor(field, cv2.COLOR_BGR2GRAY)
    write_video(path, (field[3 * k : 3 * k + H, 5 * k : 5 * k + W] for k in range(frames)), fps=25.0)
    return _decoded(path)


def _decoded(path, luma: bool = False) -> list:
    """Every frame of a video as OpenCV decodes it: BGR, or (``luma``) the decoder's luma plane."""
    from sami_rt.media.images import load_cv2

    cv2 = load_cv2()
    cap = cv2.VideoCapture(str(path), cv2.CAP_ANY, [cv2.CAP_PROP_CONVERT_RGB, 0]) if luma else cv2.VideoCapture(str(path))
    out = []
    while True:
        ok, f = cap.read()
        if not ok:
            break
        out.append(f)
    cap.release()
    return out


def _assert_encodes_as(v, frames, rt, channels=1):
    """``v`` (an encode_video result) holds what encoding each of ``frames`` as an image gives."""
    from sami_rt.media.images import to_model

    x = np.stack([to_model(f, channels, (32, 32)) for f in frames])
    mu, var = rt.encode(x)
    np.testing.assert_allclose(v.mu, mu, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(v.var, var, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(v.pixel_curvature, angles(x), atol=1e-9)


@pytest.mark.parametrize("every,batch", [(1, 1), (1, 5), (2, 64), (3, 4)])
def test_encode_video_equals_encoding_its_frames_one_at_a_time(rt, tmp_path, every, batch, fresh_seed):
    """The threaded pipeline (reader thread, frames converted into one preallocated batch, the stream encoder
    session) gives what encoding each decoded frame as an image gives, in order, for any batch size and step,
    when frames are decoded to BGR (``allow_luma=False``)."""
    frames = _colour_video(tmp_path / "c.mp4", 23, seed=fresh_seed)
    v = rt.encode_video(tmp_path / "c.mp4", every=every, batch=batch, allow_luma=False)
    assert not v.luma
    np.testing.assert_array_equal(v.frames, np.arange(0, len(frames), every))
    _assert_encodes_as(v, frames[::every], rt)
    assert v.notes == ["c.mp4: converted to grey", "c.mp4: 640x480 centre-cropped and resized to 32x32"]


@pytest.mark.parametrize("every,batch", [(1, 5), (3, 64)])
def test_grey_videos_read_as_luma_planes_equal_their_bgr_frames(rt, tmp_path, every, batch, fresh_seed):
    """A grey model reads a yuv420p video's luma plane; where the decoded chroma is neutral (a grey video)
    that is exactly the BGR route: the same result as encoding the BGR frames as images."""
    frames = _colour_video(tmp_path / "g.mp4", 23, seed=fresh_seed, grey=True)
    v = rt.encode_video(tmp_path / "g.mp4", every=every, batch=batch)
    assert v.luma
    np.testing.assert_array_equal(v.frames, np.arange(0, len(frames), every))
    _assert_encodes_as(v, frames[::every], rt)
    assert v.notes == ["g.mp4: converted to grey", "g.mp4: 640x480 centre-cropped and resized to 32x32"]


def test_colour_videos_read_as_luma_planes_stay_within_a_few_grey_levels(rt, tmp_path, fresh_seed):
    """On colour content the luma route is the pipeline's twin of encoding the luma planes (through
    LUMA_TO_GREY) as grey images, and those are close to the BGR route's grey: a mean within 1.5 levels
    and 99% of the pixels within 3 in every frame (``luma_agrees``), no pixel more than 8 off."""
    from sami_rt.media.images import load_cv2
    from sami_rt.video.frames import LUMA_TO_GREY, luma_agrees

    cv2 = load_cv2()
    bgr = _colour_video(tmp_path / "c.mp4", 23, seed=fresh_seed)
    luma = _decoded(tmp_path / "c.mp4", luma=True)
    v = rt.encode_video(tmp_path / "c.mp4", batch=8)
    assert v.luma and len(luma) == len(bgr) == len(v.frames)
    assert all(luma_agrees(y, f) for y, f in zip(luma, bgr))
    assert max(int(np.abs(cv2.LUT(y, LUMA_TO_GREY).astype(int) - cv2.cvtColor(f, cv2.COLOR_BGR2GRAY)).max())
               for y, f in zip(luma, bgr)) <= 8
    _assert_encodes_as(v, [cv2.LUT(y, LUMA_TO_GREY) for y in luma], rt)


def test_luma_table_is_opencvs_grey_of_every_luma_value(rt, tmp_path, fresh_seed):
    """LUMA_TO_GREY against its twin, OpenCV's own yuv420p -> BGR -> grey: raw frames of neutral chroma whose
    luma takes every value 0..255 map to exactly the BGR route's grey, and encode_video reads them as luma
    planes with the BGR route's result."""
    from sami_rt.media.images import load_cv2
    from sami_rt.video.frames import LUMA_TO_GREY

    cv2 = load_cv2()
    rng = np.random.default_rng(fresh_seed)
    lumas = [rng.permutation(np.tile(np.arange(256, dtype=np.uint8), 480 * 640 // 256)).reshape(480, 640)
             for _ in range(5)]
    write_y4m(tmp_path / "r.y4m", lumas)
    bgr, luma = _decoded(tmp_path / "r.y4m"), _decoded(tmp_path / "r.y4m", luma=True)
    assert len(bgr) == len(luma) == 5
    for f, y, want in zip(bgr, luma, lumas):
        np.testing.assert_array_equal(y, want)
        np.testing.assert_array_equal(cv2.LUT(y, LUMA_TO_GREY), cv2.cvtColor(f, cv2.COLOR_BGR2GRAY))
    v = rt.encode_video(tmp_path / "r.y4m", batch=2)
    assert v.luma
    _assert_encodes_as(v, bgr, rt)


@pytest.mark.parametrize("size,tags", [((481, 640), ""), ((481, 641), ""), ((480, 640), " XCOLORRANGE=FULL")])
def test_conversions_the_luma_table_does_not_model_are_read_as_bgr(rt, tmp_path, fresh_seed, size, tags):
    """At odd heights, and for streams tagged full range, OpenCV's BGR route takes another conversion (a
    level off on ~40% of the pixels): the first frame's check refuses the luma route, and the result is the
    BGR route's."""
    rng = np.random.default_rng(fresh_seed)
    write_y4m(tmp_path / "o.y4m", [rng.integers(0, 256, size, dtype=np.uint8) for _ in range(4)], tags=tags)
    v = rt.encode_video(tmp_path / "o.y4m", batch=3)
    assert not v.luma and len(v.frames) == 4
    _assert_encodes_as(v, _decoded(tmp_path / "o.y4m"), rt)


def test_luma_planes_of_mp4v_grey_content_are_the_bgr_routes_grey(tmp_path, fresh_seed):
    """The same through a real codec: a grey mp4v video of flat blocks of every level. Where the decoded
    chroma is neutral (B = G = R; mp4v sometimes codes the first frame of such sharp-edged content with chroma
    a step off) each luma value maps to exactly the BGR route's grey; elsewhere the two agree as
    ``luma_agrees`` asks."""
    from sami_rt.media.images import load_cv2
    from sami_rt.video.frames import LUMA_TO_GREY, luma_agrees

    cv2 = load_cv2()
    rng = np.random.default_rng(fresh_seed)
    # 16 x 16 flat blocks of 40 x 30 pixels: the 256 levels, shuffled
    write_video(tmp_path / "r.mp4", (np.repeat(np.repeat(rng.permutation(256).reshape(16, 16).astype(np.uint8), 30, 0), 40, 1)
                                     for _ in range(4)), fps=25.0)
    bgr, luma = _decoded(tmp_path / "r.mp4"), _decoded(tmp_path / "r.mp4", luma=True)
    assert len(bgr) == len(luma) == 4
    seen = set()
    for f, y in zip(bgr, luma):
        neutral = (f[..., 0] == f[..., 1]) & (f[..., 1] == f[..., 2])
        np.testing.assert_array_equal(cv2.LUT(y, LUMA_TO_GREY)[neutral], cv2.cvtColor(f, cv2.COLOR_BGR2GRAY)[neutral])
        assert luma_agrees(y, f)
        seen |= set(np.unique(y[neutral]).tolist())
    assert len(seen) >= 200


def test_luma_check_refuses_what_is_not_video_range_luma(fresh_seed):
    import cv2

    from sami_rt.video.frames import LUMA_TO_GREY, luma_agrees

    rng = np.random.default_rng(fresh_seed)
    y = rng.integers(16, 236, (48, 64), dtype=np.uint8)
    bgr = cv2.cvtColor(cv2.LUT(y, LUMA_TO_GREY), cv2.COLOR_GRAY2BGR)
    assert luma_agrees(y, bgr)
    assert not luma_agrees(y, cv2.cvtColor(y, cv2.COLOR_GRAY2BGR))  # full-range luma: its own grey
    assert not luma_agrees(np.full((48, 64), 113, np.uint8), np.full((48, 64, 3), 113, np.uint8))  # either range
    assert not luma_agrees(y, bgr[:-2])  # another size
    assert not luma_agrees(y.astype(np.uint16), bgr)  # not 8-bit
    assert not luma_agrees(np.clip(y.astype(int) + 5, 0, 255).astype(np.uint8), bgr)  # 5 levels off
    off = y.copy()
    off[:3] = np.clip(off[:3].astype(int) + 6, 0, 255)  # 3 rows of 48 (6%) 6 levels off: a mean of 0.4 only
    colour = bgr.copy()
    colour[..., 0] = np.clip(colour[..., 0].astype(int) + 1, 0, 255)  # no neutral pixel: the statistics decide
    assert not luma_agrees(off, colour)
    one = y.copy()
    one[0, 0] = LUMA_TO_GREY.searchsorted(LUMA_TO_GREY[one[0, 0]] + 1) if one[0, 0] < 235 else one[0, 0] - 1
    assert not luma_agrees(one, bgr)  # one neutral pixel a level off


def test_a_video_whose_luma_disagrees_is_read_as_bgr(rt, tmp_path, monkeypatch, fresh_seed):
    """Where the first frame's luma and BGR disagree (full-range, 10-bit, another decoder), every frame
    is decoded to BGR: the result is the BGR route's, frame 0 included."""
    from sami_rt.video import frames as frames_module

    frames = _colour_video(tmp_path / "g.mp4", 12, seed=fresh_seed, grey=True)
    monkeypatch.setattr(frames_module, "luma_agrees", lambda luma, bgr: False)
    v = rt.encode_video(tmp_path / "g.mp4", batch=5)
    assert not v.luma and len(v.frames) == len(frames)
    _assert_encodes_as(v, frames, rt)


class _Recorded:
    """A capture that records its release; ``fail_first_read`` makes its first read fail after decoding."""

    def __init__(self, cap, log, fail_first_read=False):
        self.cap, self.log, self.fail = cap, log, fail_first_read
        log.append(self)
        self.released = False

    def read(self):
        if self.fail:
            self.fail = False
            self.cap.grab()  # the frame is consumed, as a failed decode would consume it
            return False, None
        return self.cap.read()

    def release(self):
        self.released = True
        self.cap.release()

    def __getattr__(self, k):
        return getattr(self.cap, k)


def test_a_failed_first_bgr_read_starts_again_at_frame_0(rt, tmp_path, monkeypatch, fresh_seed):
    """If the check's BGR read of frame 0 fails while the luma read worked, the video is read as BGR from a
    fresh capture: frame indices stay right, nothing is reported truncated, and every capture is released."""
    from sami_rt.video import frames

    _colour_video(tmp_path / "g.mp4", 12, seed=fresh_seed, grey=True)
    opened, shipped = [], frames.open_capture

    def recording(cv2_, p, luma=False, threads=None):
        cap = shipped(cv2_, p, luma, threads)
        first_bgr = not luma and not any(not c.luma for c in opened)
        rec = _Recorded(cap, opened, fail_first_read=first_bgr)
        rec.luma = luma
        return rec

    monkeypatch.setattr(frames, "open_capture", recording)
    v = rt.encode_video(tmp_path / "g.mp4", batch=5)
    monkeypatch.setattr(frames, "open_capture", shipped)
    want = rt.encode_video(tmp_path / "g.mp4", batch=5, allow_luma=False)
    assert len(opened) == 3 and all(c.released for c in opened)
    assert not v.luma and v.stopped_at is None
    np.testing.assert_array_equal(v.frames, want.frames)
    np.testing.assert_allclose(v.mu, want.mu, rtol=1e-5, atol=1e-5)


def test_captures_are_released_when_the_check_or_the_setup_fails(rt, tmp_path, monkeypatch, fresh_seed):
    from sami_rt.video import frames
    from sami_rt.video import encode as video

    _colour_video(tmp_path / "g.mp4", 6, seed=fresh_seed, grey=True)
    opened, shipped = [], frames.open_capture
    recorded = lambda cv2_, p, luma=False, threads=None: _Recorded(shipped(cv2_, p, luma, threads), opened)  # noqa: E731
    monkeypatch.setattr(frames, "open_capture", recorded)

    def broken(luma, bgr):
        raise RuntimeError("check failed")

    monkeypatch.setattr(frames, "luma_agrees", broken)
    with pytest.raises(RuntimeError, match="check failed"):
        rt.encode_video(tmp_path / "g.mp4")
    assert len(opened) == 2 and all(c.released for c in opened)
    monkeypatch.undo()
    monkeypatch.setattr(frames, "open_capture", recorded)
    opened.clear()

    def no_converter(*a, **k):
        raise MemoryError("no room")

    monkeypatch.setattr(video, "FrameConverter", no_converter)
    with pytest.raises(MemoryError):
        rt.encode_video(tmp_path / "g.mp4")
    assert len(opened) == 2 and all(c.released for c in opened)


def test_frame_converter_replans_when_the_frame_size_changes(fresh_seed):
    """The converter's fast path gives what to_model gives for the same spec, crop and border included."""
    from sami_rt.contract.format import ImageSpec, Preprocess
    from sami_rt.video.frames import LUMA_TO_GREY, FrameConverter
    from sami_rt.media.images import load_cv2, to_model

    cv2 = load_cv2()
    rng = np.random.default_rng(fresh_seed)
    for spec, luma in [(ImageSpec(1, 32, 32), False), (ImageSpec(3, 32, 48), False), (ImageSpec(3, 64, 64), False),
                       (ImageSpec(1, 32, 32), True), (ImageSpec(1, 32, 32, Preprocess(pad=2)), True),
                       (ImageSpec(3, 64, 64, Preprocess(crop=140, pad=4)), False)]:
        conv = FrameConverter(spec, [], "v", luma)
        for h, w in [(480, 640), (96, 64), (96, 64), (480, 640), spec.size, spec.size, spec.content_size, (20, 30)]:
            f = rng.integers(0, 256, (h, w) if luma else (h, w, 3), dtype=np.uint8)
            out = np.empty(spec.shape, np.float32)
            conv(f, out)
            np.testing.assert_array_equal(out, to_model(cv2.LUT(f, LUMA_TO_GREY) if luma else f, spec))
    with pytest.raises(ValueError, match="one-channel"):
        FrameConverter(ImageSpec(3, 32, 32), [], "v", luma=True)


def test_encode_video_stops_its_threads_when_the_encoder_fails(tmp_path, fresh_seed):
    import threading

    rt = Runtime(device="cpu")
    _colour_video(tmp_path / "c.mp4", 30, seed=fresh_seed)
    calls = []

    def failing(x):
        calls.append(len(x))
        raise RuntimeError("encoder failed")

    rt.backend.stream_encode = failing
    with pytest.raises(RuntimeError, match="encoder failed"):
        rt.encode_video(tmp_path / "c.mp4", batch=4)
    assert calls == [4]
    assert not [t for t in threading.enumerate() if t.name.startswith("sami-rt-video")]


def test_cli_encode_video_prints_the_curvature_table(rt, tmp_path):
    r = run_cli("encode", str(EXAMPLES / "moving_disk.mp4"), cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "latent" in r.stdout and "pixel" in r.stdout and (tmp_path / "moving_disk.npz").is_file()
    luma = np.load(tmp_path / "moving_disk.npz")
    assert bool(luma["luma"])
    r = run_cli("encode", str(EXAMPLES / "moving_disk.mp4"), "--bgr-frames", "-o", "bgr.npz", cwd=tmp_path)
    bgr = np.load(tmp_path / "bgr.npz")
    assert r.returncode == 0 and not bool(bgr["luma"])
    np.testing.assert_allclose(bgr["mu"], luma["mu"], rtol=1e-5, atol=1e-5)  # a grey video: the same either way
    r = run_cli("encode", str(EXAMPLES / "guide.png"), "-o", "one.npz", cwd=tmp_path)
    assert r.returncode == 0 and np.load(tmp_path / "one.npz")["mu"].shape == (1, rt.latent_dim)


@pytest.mark.parametrize("name,fourcc", [("clip.mp4", "mp4v"), ("clip.avi", "MJPG")])
def test_write_video_writes_every_frame_under_a_final_name(tmp_path, fresh_seed, name, fourcc):
    """The one video writer (examples, benchmarks, the bench video, these tests): every frame reads back as
    itself (a lossy codec, but no frame is another), float frames are rounded, nothing temporary is left (a
    temporary name without the extension once left OpenCV writing nothing)."""
    import cv2

    from sami_rt.errors import VideoError

    rng = np.random.default_rng(fresh_seed)
    item = cv2.resize(rng.uniform(0, 255, (7, 7)), (32, 32), interpolation=cv2.INTER_CUBIC).clip(0, 255)
    frames = np.stack([cv2.warpAffine(item, cv2.getRotationMatrix2D((15.5, 15.5), a, 1.0), (32, 32))
                       for a in np.linspace(-40, 40, 12)])  # float, a smooth item rotating
    write_video(tmp_path / name, frames, fps=8, fourcc=fourcc)
    got = np.stack(_decoded(tmp_path / name))[..., 0].astype(np.float64)
    assert got.shape == frames.shape
    err = [np.abs(g - f).mean() for g, f in zip(got, frames)]
    assert max(err) < 0.25 * np.abs(frames[0] - frames[-1]).mean(), err
    assert sorted(p.name for p in tmp_path.iterdir()) == [name]
    with pytest.raises(VideoError, match="frame 1 has shape"):
        write_video(tmp_path / ("bad" + name), [frames[0], frames[0][:16]])
    assert sorted(p.name for p in tmp_path.iterdir()) == [name]
