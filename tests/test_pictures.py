"""Pictures a person can read (issue 18): the grids of `generate`, `interpolate` and `traverse` (zoomed tiles,
the guide framed, captions and titles, no filler tiles) and the curvature plot of `encode VIDEO --plot`.
`info`'s evaluation lines are tested in test_cli_errors.py."""


import numpy as np
import pytest
from click.testing import CliRunner

from sami_rt.media import grids
from sami_rt.cli.main import interpolation_labels, main, traversal_labels
from sami_rt.media.grids import BACKGROUND, FRAME, MARK, PAD, labelled_grid, layout
from sami_rt.media.images import from_model, load_cv2

from helpers import EXAMPLES

GUIDE = EXAMPLES / "guide.png"


def random_tiles(rng, n=None, channels=None, low=3):
    n = int(rng.integers(1, 20)) if n is None else n
    h, w = (int(v) for v in rng.integers(low, 20, 2))
    c = int(rng.choice([1, 3])) if channels is None else channels
    return rng.integers(0, 256, (n, h, w, c), dtype=np.uint8)


def zoomed(img, z):
    t = np.repeat(np.repeat(img, z, 0), z, 1)
    return np.repeat(t, 3, 2) if t.shape[2] == 1 else t


def is_background(region):
    return bool(np.all(region == np.asarray(BACKGROUND, np.uint8)))


def read_rgb(path):
    import cv2

    return cv2.imread(str(path), cv2.IMREAD_COLOR)[:, :, ::-1]


def test_grid_has_zoomed_tiles_and_no_filler_row(fresh_seed):
    rng = np.random.default_rng(fresh_seed)
    imgs = random_tiles(rng)
    n, h, w, _ = imgs.shape
    ncol, zoom = int(rng.integers(1, 10)), int(rng.integers(1, 5))
    g = labelled_grid(imgs, ncol, zoom)
    cols = min(ncol, n)
    rows = -(-n // cols)
    assert g.shape == (rows * (h * zoom + PAD) + PAD, cols * (w * zoom + PAD) + PAD, 3) and g.dtype == np.uint8
    lay = layout(n, (h * zoom, w * zoom), ncol)
    for i in range(n):
        top, left = lay.box(i)
        np.testing.assert_array_equal(g[top : top + h * zoom, left : left + w * zoom], zoomed(imgs[i], zoom))
    top, left = lay.box(n - 1)
    assert is_background(g[top:, left + w * zoom :])  # the rest of the last row: background, not black tiles
    covered = np.zeros(g.shape[:2], bool)
    for i in range(n):
        top, left = lay.box(i)
        covered[top : top + h * zoom, left : left + w * zoom] = True
    assert is_background(g[~covered])


def test_auto_zoom_reaches_readable_tiles(fresh_seed):
    rng = np.random.default_rng(fresh_seed)
    h, w = (int(v) for v in rng.integers(1, 200, 2))
    z = grids.auto_zoom(h, w)
    assert max(h, w) * z >= min(grids.MIN_TILE, max(h, w) * grids.MAX_ZOOM)
    assert z == 1 or max(h, w) * (z - 1) < grids.MIN_TILE
    assert grids.auto_zoom(32, 32) == 3


def test_marked_tile_is_framed_and_captions_drawn_only_where_given(fresh_seed):
    rng = np.random.default_rng(fresh_seed)
    imgs = random_tiles(rng, n=int(rng.integers(3, 12)), low=12)
    n, h, w, _ = imgs.shape
    ncol, zoom = int(rng.integers(2, 6)), int(rng.integers(3, 5))  # tiles >= 36 px: "guide" fits uncut
    k = int(rng.integers(n))
    labels = [""] * n
    labels[k] = "guide"
    plain = labelled_grid(imgs, ncol, zoom)
    g = labelled_grid(imgs, ncol, zoom, labels=labels, marked=(k,))
    H, W = h * zoom, w * zoom
    assert g.shape[1] == plain.shape[1] and g.shape[0] > plain.shape[0]  # a caption strip under every row
    rows = -(-n // min(ncol, n))
    caption_h = (g.shape[0] - PAD) // rows - H - PAD
    assert caption_h > 0 and g.shape[0] == rows * (H + caption_h + PAD) + PAD
    lay = layout(n, (H, W), ncol, caption_h)
    for i in range(n):
        top, left = lay.box(i)
        np.testing.assert_array_equal(g[top : top + H, left : left + W], zoomed(imgs[i], zoom))
        ring = g[top - FRAME : top + H + FRAME, left - FRAME : left + W + FRAME].copy()
        ring[FRAME:-FRAME, FRAME:-FRAME] = MARK if i == k else BACKGROUND
        want = np.asarray(MARK if i == k else BACKGROUND, np.uint8)
        assert np.all(ring == want), i  # the marked tile's frame is MARK all round, the others' gap background
        caption = g[top + H + FRAME : top + H + caption_h, left : left + W]
        assert is_background(caption) != (i == k)  # text under the labelled tile only
        if i == k:
            assert (np.abs(caption.astype(int) - BACKGROUND).sum(2) > 150).sum() >= 20  # light text pixels


def test_long_labels_are_cut_and_a_long_title_wraps(fresh_seed):
    rng = np.random.default_rng(fresh_seed)
    imgs = random_tiles(rng, n=int(rng.integers(2, 5)))
    n = len(imgs)
    long_label = "x" * int(rng.integers(40, 80))
    scale, cut = grids._fit(load_cv2(), [long_label] * n, imgs.shape[2] * 2 - 4)
    assert scale == grids.SCALES[-1] and all(c.endswith("..") and len(c) < len(long_label) for c in cut)
    labelled_grid(imgs, n, 2, labels=[long_label] * n)  # draws without error
    short = labelled_grid(imgs, n, 2, title="A")
    words = " ".join("word%d" % i for i in range(int(rng.integers(20, 40)))) + " " + "y" * 200
    wrapped = labelled_grid(imgs, n, 2, title=words)
    plain = labelled_grid(imgs, n, 2)
    assert short.shape[1] == wrapped.shape[1] == plain.shape[1]  # the title never widens the grid
    assert wrapped.shape[0] > short.shape[0] > plain.shape[0]
    assert not is_background(short[: short.shape[0] - plain.shape[0]])


def test_caption_texts():
    assert interpolation_labels(5) == ["A t=0", "t=0.25", "t=0.50", "t=0.75", "B t=1"]
    assert interpolation_labels(2) == ["A t=0", "B t=1"]
    assert traversal_labels(3, [-2.0, 0.0, 1.5], "spread") == ["-2 spread", "+0 spread", "+1.5 spread"]
    assert traversal_labels(1, [-7.0, 10.0], "value") == ["z1=-7", "z1=10"]


# ------------------------------------------------------------------------------------------- the CLI
def invoke(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def test_generate_grid_frames_the_guide_at_the_given_zoom(tmp_path, monkeypatch, fresh_seed):
    from sami_rt.runtime import Runtime

    rng = np.random.default_rng(fresh_seed)
    n, zoom = int(rng.integers(2, 10)), int(rng.integers(1, 4))
    monkeypatch.chdir(tmp_path)
    r = invoke("generate", "--guide", GUIDE, "-n", n, "--steps", 3, "--zoom", zoom, "--seed", int(rng.integers(99)),
               "-o", "g.png", "--device", "cpu")
    assert r.exit_code == 0, r.stderr
    assert "(the framed first tile: the guide)" in r.stdout
    g = read_rgb(tmp_path / "g.png")
    x = np.load(tmp_path / "g.npz")["x"]
    assert x.shape[0] == n  # the latents beside the grid: the samples only, as before
    guide = from_model(Runtime(device="cpu").load_images(str(GUIDE)))[0]
    tiles = [guide] + list(from_model(x))
    H, W = guide.shape[0] * zoom, guide.shape[1] * zoom
    cols = min(8, n) + 1  # the guide in a column of its own, the samples in rows of 8 beside it
    rows = -(-n // 8)
    assert g.shape[1] == cols * (W + PAD) + PAD
    t0 = zoomed(guide, zoom)
    top = next(y for y in range(PAD, g.shape[0] - H) if np.array_equal(g[y : y + H, PAD : PAD + W], t0))
    title_h = top - PAD
    assert title_h > 0 and not is_background(g[PAD:top - FRAME])  # the title: model, sampler, steps, scale
    caption_h = (g.shape[0] - title_h - PAD) // rows - H - PAD
    assert caption_h > 0 and g.shape[0] == title_h + rows * (H + caption_h + PAD) + PAD  # no filler row
    lay = layout(n + 1, (H, W), 8, caption_h, title_h, lead=True)
    for i, t in enumerate(tiles):
        top_i, left = lay.box(i)
        np.testing.assert_array_equal(g[top_i : top_i + H, left : left + W], zoomed(t, zoom))
    assert np.all(g[top - FRAME, PAD - FRAME : PAD + W + FRAME] == MARK)
    assert np.all(g[top : top + H, PAD - FRAME] == MARK) and np.all(g[top + H, PAD : PAD + W] == MARK)
    assert not is_background(g[top + H + FRAME : top + H + caption_h, PAD : PAD + W])  # "guide"
    assert is_background(g[top + H + FRAME : top + H + caption_h, PAD + W + PAD :])  # the samples: no caption
    assert is_background(g[top + H + caption_h :, : PAD + W + PAD])  # nothing under the guide


def test_titles_name_the_model_and_how_it_sampled(fresh_seed):
    from sami_rt.cli.shared import sampling_title
    from sami_rt.runtime import Runtime

    rng = np.random.default_rng(fresh_seed)
    default = Runtime(device="cpu")  # disks-3d: 100 DDPM steps, its scale over part of the noise levels
    want = "disks-3d: what; ddpm 100 steps, scale 50 at levels 0.05-1"
    assert sampling_title(default, "what", "ddpm", None, None) == want
    rt = Runtime("disks-small", device="cpu")  # a recorded step count, the scale at every level
    assert sampling_title(rt, "what", "ddpm", None, None) == "disks-small: what; ddpm 10 steps, scale 3"
    steps, scale = int(rng.integers(1, 400)), float(np.round(rng.uniform(0.5, 9), 2))
    assert sampling_title(rt, "w", "ddim", steps, scale) == f"disks-small: w; ddim {steps} steps, scale {scale:g}"
    assert sampling_title(rt, "w", "dpmpp-2m", None, None, guided=False) == "disks-small: w; dpmpp-2m 20 steps"


def test_a_leading_tile_stands_in_its_own_column(fresh_seed):
    """generate -n 16 with a guide: two full rows of 8 samples beside the guide, not a 17th tile alone."""
    rng = np.random.default_rng(fresh_seed)
    lay = layout(17, (32, 32), 8, lead=True)
    assert (lay.nrow, lay.ncol) == (2, 8) and lay.box(0) == (PAD, PAD)
    assert [lay.box(i)[1] for i in (1, 8, 9, 16)] == [PAD + 38, PAD + 8 * 38, PAD + 38, PAD + 8 * 38]
    n, ncol = int(rng.integers(1, 30)), int(rng.integers(1, 10))
    lay = layout(n + 1, (5, 7), ncol, lead=True)
    boxes = {lay.box(i) for i in range(n + 1)}
    assert len(boxes) == n + 1 and lay.nrow == -(-n // min(ncol, n))
    assert all(left > PAD for top, left in (lay.box(i) for i in range(1, n + 1)))  # column 0 is the lead's alone
    imgs = random_tiles(rng, n=n + 1)
    g = labelled_grid(imgs, ncol, 1, marked=(0,), lead=True)
    h, w = imgs.shape[1:3]
    lay = layout(n + 1, (h, w), ncol, lead=True)
    assert g.shape[:2] == lay.shape
    for i in range(n + 1):
        top, left = lay.box(i)
        np.testing.assert_array_equal(g[top : top + h, left : left + w], zoomed(imgs[i], 1))


@pytest.mark.parametrize("command", ["interpolate", "traverse"])
def test_interpolate_and_traverse_caption_every_tile_under_a_title(command, tmp_path, monkeypatch, fresh_seed):
    rng = np.random.default_rng(fresh_seed)
    monkeypatch.chdir(tmp_path)
    n = int(rng.integers(2, 5))
    if command == "interpolate":
        args = [GUIDE, EXAMPLES / "guide_light.png", "-n", n]
    else:
        vals = ",".join(f"{v:g}" for v in np.round(rng.normal(size=n) * 2, 1))
        from sami_rt.runtime import DEFAULT_MODEL, read_bundle

        D = read_bundle(DEFAULT_MODEL, verify=False).manifest.latent_dim
        args = [GUIDE, "--axis", int(rng.integers(D)), f"--values={vals}", "--unit", "sd"]
    r = invoke(command, *args, "--steps", 3, "-o", "p.png", "--device", "cpu")
    assert r.exit_code == 0, r.stderr
    g = read_rgb(tmp_path / "p.png")
    x = np.load(tmp_path / "p.npz")["x"]
    H, W = x.shape[2] * 3, x.shape[3] * 3  # the default zoom for the 32-px model
    lead = command == "traverse"  # traverse shows the image first, in a column of its own
    assert grids.auto_zoom(*x.shape[2:]) == 3 and g.shape[1] == (n + lead) * (W + PAD) + PAD
    title_and_caption = g.shape[0] - (H + 2 * PAD)
    assert title_and_caption > 0
    first = zoomed(from_model(x)[0], 3)  # the samples' top: below the title, where sample 0's pixels are
    left0 = PAD + lead * (W + PAD)
    tops = [y for y in range(PAD, title_and_caption + PAD + 1) if np.array_equal(g[y : y + H, left0 : left0 + W], first)]
    assert len(tops) == 1
    top = tops[0]
    assert not is_background(g[PAD : top - PAD])  # the title
    if lead:
        from sami_rt.runtime import Runtime

        image = zoomed(from_model(Runtime(device="cpu").load_images(str(GUIDE)))[0], 3)
        np.testing.assert_array_equal(g[top : top + H, PAD : PAD + W], image)
    for i in range(n + lead):
        left = PAD + i * (W + PAD)
        assert not is_background(g[top + H + FRAME :, left : left + W]), i  # every tile's caption


# ------------------------------------------------------------------------------------ the curvature plot
def random_video(rng, n_frames, d):
    from sami_rt.video.trajectory import VideoEncoding, angles

    mu = np.cumsum(rng.normal(size=(n_frames, d)), 0)
    pixels = rng.normal(size=(n_frames, 16))
    return VideoEncoding(frames=np.arange(n_frames) * int(rng.integers(1, 4)), mu=mu,
                         var=np.exp(rng.normal(size=mu.shape)), latent_curvature=angles(mu),
                         pixel_curvature=angles(pixels), fps=25.0)


def test_curvature_plot_has_ylabels_a_title_and_legends_off_the_curves(fresh_seed):
    pytest.importorskip("matplotlib")
    from sami_rt.cli.encode import video_figure

    rng = np.random.default_rng(fresh_seed)
    v = random_video(rng, int(rng.integers(5, 60)), int(rng.choice([1, 3, 8, 12])))
    fig = video_figure(v, "walk.mp4")
    fig.draw_without_rendering()
    title = fig.get_suptitle()
    assert title.startswith(f"walk.mp4: {len(v.frames)} frames")
    assert f"latent {v.mean_latent_curvature:.1f} deg" in title and f"pixel {v.mean_pixel_curvature:.1f} deg" in title
    assert len(fig.axes) == 2
    for ax in fig.axes:
        assert ax.get_ylabel().strip() and ax.get_xlabel() == "frame" and ax.get_title().strip()
        leg = ax.get_legend()
        assert leg is not None
        box = leg.get_window_extent()
        assert not box.overlaps(ax.get_window_extent())  # outside the panel, so over no curve
        for line in ax.get_lines():
            pts = line.get_transform().transform(np.asarray(line.get_xydata()))
            assert not box.count_contains(pts[np.all(np.isfinite(pts), 1)])
        assert fig.bbox.contains(box.x0, box.y0) and fig.bbox.contains(box.x1, box.y1)  # and inside the figure


def test_curvature_plot_is_written_at_its_figure_size(tmp_path, fresh_seed):
    pytest.importorskip("matplotlib")
    from sami_rt.cli.encode import plot_video, video_figure

    rng = np.random.default_rng(fresh_seed)
    v = random_video(rng, int(rng.integers(3, 30)), 8)
    out = tmp_path / "c.png"
    plot_video(v, out, "walk.mp4")
    w, h = video_figure(v, "walk.mp4").get_size_inches() * 110
    assert read_rgb(out).shape[:2] == (round(h), round(w))


def test_curvature_plot_of_two_frames_says_the_curvature_is_undefined(fresh_seed):
    pytest.importorskip("matplotlib")
    from sami_rt.cli.encode import video_figure

    fig = video_figure(random_video(np.random.default_rng(fresh_seed), 2, 8), "short.mp4")
    assert fig.get_suptitle() == "short.mp4: 2 frames, mean curvature undefined (fewer than 3 frames)"


def test_curvature_plot_of_a_still_video_says_it_does_not_move(fresh_seed):
    """Enough frames but every step of length zero: the angles are undefined because nothing moves."""
    pytest.importorskip("matplotlib")
    from sami_rt.cli.encode import video_figure
    from sami_rt.video.trajectory import VideoEncoding, angles

    rng = np.random.default_rng(fresh_seed)
    n = int(rng.integers(3, 20))
    mu = np.repeat(rng.normal(size=(1, 4)), n, 0)
    v = VideoEncoding(frames=np.arange(n), mu=mu, var=np.exp(rng.normal(size=mu.shape)),
                      latent_curvature=angles(mu), pixel_curvature=angles(np.repeat(rng.normal(size=(1, 9)), n, 0)),
                      fps=25.0)
    assert v.mean_latent_curvature is None
    assert video_figure(v, "still.mp4").get_suptitle() == (
        f"still.mp4: {n} frames, mean curvature undefined (the trajectory does not move)")
