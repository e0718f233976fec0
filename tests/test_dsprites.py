"""The procedural dSprites against its factor description (train/dsprites.py)."""

import numpy as np
import pytest
import torch

from train.dsprites import DSPRITES_SIZES, factor_values, full_grid, render_dsprites, sample_classes


def moments(img):
    """Area (pixels), centroid (x, y) in image fractions and principal-axis angle of a {-1, 1} image."""
    w = (np.asarray(img) > 0).astype(np.float64)
    H, W = w.shape
    ys, xs = np.mgrid[:H, :W]
    xs, ys = (xs + 0.5) / W, (ys + 0.5) / H
    a = w.sum()
    cx, cy = (w * xs).sum() / a, (w * ys).sum() / a
    mxx, myy, mxy = (w * (xs - cx) ** 2).sum() / a, (w * (ys - cy) ** 2).sum() / a, (w * (xs - cx) * (ys - cy)).sum() / a
    return a, cx, cy, 0.5 * np.arctan2(2 * mxy, mxx - myy)


def test_the_full_grid_has_every_combination_once():
    g = full_grid()
    assert g.shape == (737_280, 5) and np.prod(DSPRITES_SIZES) == 737_280
    strides = np.cumprod((1,) + DSPRITES_SIZES[::-1])[:-1][::-1]
    assert np.array_equal(np.sort(g @ strides), np.arange(737_280))
    assert np.array_equal(g.max(0) + 1, DSPRITES_SIZES)


def test_centroid_follows_x_and_y(fresh_seed):
    c = sample_classes(64, torch.Generator().manual_seed(fresh_seed))
    c[:, 0] = 1  # the ellipse: symmetric about its centre, so its centroid is its centre
    imgs = render_dsprites(c)[:, 0].numpy()
    v = factor_values(c)
    for img, x, y in zip(imgs, v["x"], v["y"]):
        _, cx, cy, _ = moments(img)
        assert abs(cx - x) < 1.5 / 64 and abs(cy - y) < 1.5 / 64


def test_area_grows_with_scale_squared_and_differs_by_shape():
    # Every one of the 40 orientations (no draw). The scale law is checked on 256-px renders: at 64 px a square
    # of side 14.4 px covers 14 or 15 pixel rows depending on where its edges fall, an error up to 0.07 in the
    # area ratio (seen at 0.879 for 0.81) that is the grid's, not the renderer's; at 256 px it is below 0.02.
    s = np.linspace(0.5, 1, 6)
    for orientation in range(40):
        base = np.array([[0, 0, orientation, 15, 16]] * 6)
        base[:, 1] = np.arange(6)
        areas = {}
        for shape in range(3):
            c = base.copy()
            c[:, 0] = shape
            a = np.array([moments(im)[0] for im in render_dsprites(c, size=256)[:, 0].numpy()])
            assert np.allclose(a / a[-1], s**2, atol=0.03), (orientation, shape, a / a[-1])
            areas[shape] = moments(render_dsprites(c[-1:], size=64)[0, 0].numpy())[0] / 64**2
        # square side 0.25 (area 0.0625), ellipse pi * 0.125 * 0.0625 (0.0245), heart in between
        assert areas[0] == pytest.approx(0.0625, rel=0.05), orientation
        assert areas[1] == pytest.approx(np.pi * 0.125 * 0.0625, rel=0.05), orientation
        assert areas[1] < areas[2] < areas[0], orientation


def test_orientation_turns_the_ellipses_principal_axis(fresh_seed):
    rng = np.random.default_rng(fresh_seed)
    c = np.array([[1, 5, k, rng.integers(8, 24), rng.integers(8, 24)] for k in range(40)])
    imgs = render_dsprites(c)[:, 0].numpy()
    for k, img in enumerate(imgs):
        _, _, _, phi = moments(img)
        want = -2 * np.pi * k / 40  # counter-clockwise on screen is a negative angle with y pointing down
        d = (phi - want + np.pi / 2) % np.pi - np.pi / 2  # an ellipse's axis is defined modulo pi
        assert abs(d) < 0.06, (k, phi, want)


def test_every_sprite_stays_inside_the_image():
    c = np.array([[s, 5, o, x, y] for s in range(3) for o in range(0, 40, 5) for x in (0, 31) for y in (0, 31)])
    imgs = render_dsprites(c)[:, 0].numpy() > 0
    assert imgs.any((1, 2)).all()
    assert not (imgs[:, 0].any() or imgs[:, -1].any() or imgs[:, :, 0].any() or imgs[:, :, -1].any())


def test_training_data_and_evaluation_set(fresh_seed):
    from conftest import tiny_config
    from train.data import BatchSource, eval_set

    cfg = tiny_config(dataset="dsprites", image_size=32, n_train=0)
    x = BatchSource(cfg).sample(8, torch.Generator().manual_seed(fresh_seed))
    assert x.shape == (8, 1, 32, 32) and set(np.unique(x.numpy())) <= {-1.0, 1.0}
    xe, fe = eval_set(cfg, 20)
    assert xe.shape == (20, 1, 32, 32) and fe.shape == (20, 5)
    assert torch.equal(fe, fe.round()) and (fe.max(0).values < torch.tensor(DSPRITES_SIZES)).all()


def test_the_published_file_is_read_by_factor_classes(tmp_path, fresh_seed):
    """A file in the published layout (imgs uint8 0/1, latents_classes with the colour column first)."""
    from conftest import tiny_config
    from train.data import BatchSource, DataError, eval_set
    from train.dsprites import DSpritesFile

    rng = np.random.default_rng(fresh_seed)
    grid = full_grid()
    pick = rng.choice(len(grid), 50, replace=False)
    classes = grid[pick]
    imgs = (rng.random((50, 64, 64)) > 0.5).astype(np.uint8)
    path = tmp_path / "dsprites_ndarray_test.npz"
    np.savez(path, imgs=imgs, latents_classes=np.c_[np.zeros(50, np.int64), classes])
    f = DSpritesFile(path)
    order = rng.permutation(50)
    got = f.render(classes[order])
    assert torch.equal(got, torch.from_numpy(imgs[order, None].astype(np.float32)) * 2 - 1)
    assert f.render(classes[:3], size=32).shape == (3, 1, 32, 32)
    absent = np.array([c for c in grid[:200] if not (c == classes).all(1).any()][:1])
    with pytest.raises(DataError, match="holds 50 of the 737280 factor combinations"):
        f.render(absent)
    cfg = tiny_config(dataset="dsprites", image_size=64, data_path=str(tmp_path / "missing.npz"))
    with pytest.raises(DataError, match="dSprites file .*missing.npz not found"):
        BatchSource(cfg)
    (tmp_path / "bad.npz").write_bytes(b"nope")
    with pytest.raises(DataError, match="not a dSprites .npz"):
        eval_set(cfg.replace(data_path=str(tmp_path / "bad.npz")), 4)
