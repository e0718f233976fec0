"""train/disk_checks.py on synthetic models whose answers are known: an encoder that reads the disk's centre
from the pixels and maps it by a chosen function, a decoder that draws a disk where the code says."""

import json

import numpy as np
import pytest

from train.disk_checks import (FOLD_GRID, Geometry, axis_angles, cell_orientation, decode_check, fold_check,
                               fold_fraction, interpolation_check, judge_images, run_checks)


def centroid(x: np.ndarray, fg: float) -> np.ndarray:
    """Coverage-weighted centres [N, 2] and backgrounds [N] of disk images [N, 1, H, W] in [-1, 1]."""
    v = (np.asarray(x, np.float64)[:, 0] + 1) / 2
    bg = np.median(v.reshape(len(v), -1), axis=1)
    w = np.clip((v - bg[:, None, None]) / (fg - bg[:, None, None]), 0, 1)
    ys, xs = np.mgrid[: v.shape[1], : v.shape[2]] + 0.5
    s = w.sum((1, 2))
    return np.c_[(w * xs).sum((1, 2)) / s, (w * ys).sum((1, 2)) / s], bg


class Synthetic:
    """encode: code(centre x, centre y, background) [N, 3]; decode: a disk drawn at ``draw(z)`` ([N, 3] factors),
    the noise seeds of each call kept in ``seen``."""

    name, sampler, steps, scale = "synthetic", "ddpm", 1, 1.0

    def __init__(self, geometry, code=None, draw=None):
        self.geometry, self.latent_dim = geometry, 3
        self.code = code or (lambda f: f)
        self.draw = draw or (lambda z: z)
        self.seen = []

    def encode(self, x):
        c, bg = centroid(x, self.geometry.foreground)
        return self.code(np.c_[c, bg])

    def decode(self, z, seeds):
        self.seen.append(np.asarray(seeds))
        out = self.draw(np.asarray(z, np.float64))
        return out if out.ndim == 4 else self.geometry.render(out)


def random_geometry(rng) -> Geometry:
    lo = rng.uniform(0.0, 0.2)
    return Geometry(32, float(rng.uniform(3.5, 4.5)), 1.0, lo, float(lo + rng.uniform(0.3, 0.5)))


def test_an_orientation_preserving_map_has_no_folds_and_its_angles(fresh_seed):
    rng = np.random.default_rng(fresh_seed)
    g = random_geometry(rng)
    a, b, c = rng.uniform(0.2, 2.0, 3)
    m = Synthetic(g, lambda f: np.c_[a * f[:, 0] - 3, f[:, 2] * c, b * f[:, 1] + 1])  # y on axis 2, bg on 1
    out, maps = fold_check(m)
    assert (out["z_x"], out["z_y"]) == (0, 2)
    for plane in ("axes", "readout"):
        assert out[plane]["fold_fraction"] == 0.0 and out[plane]["majority"] == 1
        assert out[plane]["fold_fraction_per_background"] == [0.0, 0.0, 0.0]
    assert abs(out["axes"]["rotation_deg"]) < 0.5 and out["axes"]["between_deg"] == pytest.approx(90, abs=0.5)
    assert maps["axes"][1].shape == (3, FOLD_GRID - 1, FOLD_GRID - 1)


def test_a_reflected_rim_gives_the_share_of_reversed_columns(fresh_seed):
    rng = np.random.default_rng(fresh_seed)
    g = random_geometry(rng)
    t = rng.uniform(18, 25)

    def fold(x):
        return np.where(x <= t, x, 2 * t - x)

    m = Synthetic(g, lambda f: np.c_[fold(f[:, 0]), f[:, 1], f[:, 2]])
    out, _ = fold_check(m)
    pos = g.positions(FOLD_GRID)
    expected = np.mean(np.diff(fold(pos)) < 0)  # the columns of cells whose x-step runs backwards
    assert 0.05 < expected < 0.5
    for frac in (out["axes"]["fold_fraction"], *out["axes"]["fold_fraction_per_background"]):
        assert abs(frac - expected) <= 1 / (FOLD_GRID - 1) + 1e-9, (frac, expected)
    assert out["axes"]["majority"] == 1


def test_the_angle_of_a_rotated_map_and_the_handedness_of_a_mirrored_one(fresh_seed):
    rng = np.random.default_rng(fresh_seed)
    g = random_geometry(rng)
    th = rng.uniform(-40, 40)
    c, s = np.cos(np.radians(th)), np.sin(np.radians(th))
    R = np.array([[c, -s], [s, c]]) * rng.uniform(0.3, 3)
    out, _ = fold_check(Synthetic(g, lambda f: np.c_[f[:, :2] @ R.T, f[:, 2]]))
    a = out["axes"]
    assert a["rotation_deg"] == pytest.approx(th, abs=1.0) and a["angle_x_deg"] == pytest.approx(th, abs=1.0)
    assert a["between_deg"] == pytest.approx(90, abs=1.0) and a["fold_fraction"] == 0.0
    mirrored = R @ np.diag([1.0, -1.0])
    out, _ = fold_check(Synthetic(g, lambda f: np.c_[f[:, :2] @ mirrored.T, f[:, 2]]))
    a = out["axes"]
    assert a["between_deg"] == pytest.approx(-90, abs=1.0) and a["majority"] == -1 and a["fold_fraction"] == 0.0


def test_cell_orientation_and_angles_on_points(fresh_seed):
    rng = np.random.default_rng(fresh_seed)
    n = int(rng.integers(5, 12))
    xs, ys = np.meshgrid(np.linspace(0, 1, n), np.linspace(0, 1, n))
    P = np.stack([xs, ys], -1) + rng.uniform(-1, 1, 2)
    assert (cell_orientation(P) == 1).all() and (cell_orientation(P[..., ::-1]) == -1).all()
    signs = np.ones((n - 1, n - 1))
    k = int(rng.integers(1, n - 1))
    signs[:, :k] = -1
    assert fold_fraction(signs) == (min(k, n - 1 - k) / (n - 1), 1 if k <= n - 1 - k else -1)
    flat = np.zeros(100)  # a flat map (an untrained encoder's): its cells are not reversed ones
    q = int(rng.integers(1, 10))
    flat[:q], flat[q:3 * q] = -1, 1
    assert fold_fraction(flat) == (q / 100, 1)
    f = rng.uniform(4, 28, (50, 2))
    assert axis_angles(f, f @ np.array([[0, -1], [1, 0]]).T * 2)["angle_x_deg"] == pytest.approx(90)  # x -> +z_y


def test_decode_error_of_a_decoder_that_misplaces_by_a_known_offset(fresh_seed):
    rng = np.random.default_rng(fresh_seed)
    g = random_geometry(rng)
    d = rng.uniform(0.5, 1.5, 2) * rng.choice([-1, 1], 2)
    m = Synthetic(g, draw=lambda z: np.c_[z[:, :2] + d, z[:, 2]])
    out, (f, centres, err) = decode_check(m, samples=2, seed=int(rng.integers(1000)))
    assert out["images"] == 7 * 7 * 3 * 2 and out["no_disk"] == 0
    assert out["median_px"] == pytest.approx(np.hypot(*d), abs=0.1) and out["max_px"] <= np.hypot(*d) + 0.2
    assert out["median_px_inner"] == pytest.approx(np.hypot(*d), abs=0.1)
    exact = decode_check(Synthetic(g), samples=1)[0]
    assert exact["median_px"] < 0.1 and exact["within_2px"] == 1.0
    blank = decode_check(Synthetic(g, draw=lambda z: np.c_[z[:, :2], np.full(len(z), g.foreground)]), samples=1)[0]
    assert blank["no_disk"] == blank["images"] and np.isnan(blank["median_px"])


def test_the_line_judge_passes_a_moving_disk_and_fails_a_cross_fade_and_a_faint_disk(fresh_seed):
    rng = np.random.default_rng(fresh_seed)
    g = random_geometry(rng)
    bg = rng.uniform(g.bg_min, g.bg_max)
    while True:
        A, B = rng.uniform(g.radius, g.size - g.radius, (2, 2))
        if np.hypot(*(A - B)) >= 10:
            break
    lam = np.linspace(0, 1, 10)[:, None]
    moving = g.render(np.c_[(1 - lam) * A + lam * B, np.full(10, bg)])[:, 0]
    ends = np.stack([A, B])
    assert judge_images(moving + rng.normal(0, 0.02, moving.shape), ends, g.foreground)["passed"]
    a, b = g.render([[*A, bg], [*B, bg]])[:, 0]
    fade = (1 - lam[:, :, None]) * a + lam[:, :, None] * b
    r = judge_images(fade, ends, g.foreground)
    assert not r["passed"] and r["verdict"] == "blobs"
    faint = Geometry(g.size, g.radius, bg + 0.5 * (g.foreground - bg), g.bg_min, g.bg_max)
    r = judge_images(faint.render(np.c_[(1 - lam) * A + lam * B, np.full(10, bg)])[:, 0], ends, g.foreground)
    assert not r["passed"] and r["verdict"] == "faint" and r["monotone"] and r["reaches_ends"]
    jump = moving[np.r_[0, 0, 0, 0, 0, 9, 9, 9, 9, 9]]
    assert judge_images(jump, ends, g.foreground)["verdict"] == "jump"


def test_interpolation_lines_share_their_noise_and_an_exact_model_passes_them(fresh_seed):
    rng = np.random.default_rng(fresh_seed)
    g = random_geometry(rng)
    seed, pairs = int(rng.integers(10_000)), int(rng.integers(3, 7))
    m = Synthetic(g)
    out, (A, B, imgs, verdicts) = interpolation_check(m, pairs, seed=seed)
    assert out["passed"] == pairs and imgs.shape == (pairs, 10, g.size, g.size)
    seeds = m.seen[-1].reshape(pairs, 10)
    assert (seeds == seeds[:, :1]).all() and len(set(seeds[:, 0].tolist())) == pairs
    assert (np.hypot(*(A[:, :2] - B[:, :2]).T) >= 8).all()
    assert (np.abs(g.foreground - np.r_[A[:, 2], B[:, 2]]) >= 0.2).all()

    def crossfade(z):  # decodes the line's two ends and blends them: two ghost disks in between
        lam = np.linspace(0, 1, 10)[:, None, None]
        ends = g.render(z.reshape(-1, 10, 3)[:, [0, -1]].reshape(-1, 3))[:, 0].reshape(-1, 2, g.size, g.size)
        return ((1 - lam) * ends[:, :1] + lam * ends[:, 1:]).reshape(-1, 1, g.size, g.size)

    out, (A, B, _, verdicts) = interpolation_check(Synthetic(g, draw=crossfade), pairs, seed=seed)
    # two half-contrast ghosts mid-line: two blobs, or (where both stay under 0.6 of the contrast) too faint, or
    # (where only one ghost at a time clears the blob threshold) a centre that jumps from A's place to B's. Ends
    # closer than a diameter (the check allows 8 px) overlap, and their cross-fade is one blob that moves: the
    # judge cannot tell that from motion, so only lines whose disks lie apart must fail.
    apart = np.hypot(*(A[:, :2] - B[:, :2]).T) > 2 * g.radius + 1
    assert sum(out["verdicts"].values()) == pairs and out["passed"] <= (~apart).sum()
    assert {v for v, a in zip(verdicts, apart) if a} <= {"blobs", "faint", "jump"}, (verdicts, apart)
    if apart.any():
        assert out["verdicts"].get("blobs", 0) >= 1, out["verdicts"]


def test_two_draws_and_two_checks_never_share_a_rows_noise(fresh_seed):
    """A validation draw (seed k) and a report draw (seed k + 1) decode the same grid with disjoint noise: the
    seeds of one draw's decode and interpolation rows meet neither each other nor the other draw's."""
    rng = np.random.default_rng(fresh_seed)
    g = random_geometry(rng)
    k, pairs = int(rng.integers(10_000)), int(rng.integers(3, 7))
    seen = {}
    for seed in (k, k + 1):
        m = Synthetic(g)
        decode_check(m, samples=2, seed=seed)
        interpolation_check(m, pairs, seed=seed)
        seen[seed] = [set(m.seen[0].tolist()), set(m.seen[1].tolist())]
        assert len(seen[seed][0]) == 2 * 3 * 7 * 7 and len(seen[seed][1]) == pairs
        assert not seen[seed][0] & seen[seed][1]
    assert not (seen[k][0] | seen[k][1]) & (seen[k + 1][0] | seen[k + 1][1])


def test_run_checks_writes_the_json_and_labelled_figures(fresh_seed, tmp_path):
    rng = np.random.default_rng(fresh_seed)
    g = random_geometry(rng)
    res = run_checks(Synthetic(g), tmp_path / "out", pairs=2, decode_samples=1, seed=int(rng.integers(100)),
                     log=lambda s: None)
    for f in ("disk_checks.json", "fold.png", "decode.png", "interpolation_lines.png"):
        assert (tmp_path / "out" / f).stat().st_size > 0, f
    saved = json.loads((tmp_path / "out" / "disk_checks.json").read_text())
    assert saved["summary"] == res["summary"] and res["summary"]["fold_fraction"] == 0.0
    assert res["summary"]["interpolation_default_scale"] == "2/2" and not list((tmp_path / "out").glob("*.tmp*"))
    # the quick look at a checkpoint: the fold alone, nothing decoded
    quick = run_checks(Synthetic(g), tmp_path / "quick", pairs=0, decode_samples=0, log=lambda s: None)
    assert sorted(p.name for p in (tmp_path / "quick").iterdir()) == ["disk_checks.json", "fold.png"]
    assert "decode" not in quick and "decode_median_px" not in quick["summary"]
    assert quick["summary"]["fold_fraction"] == res["summary"]["fold_fraction"]


def test_a_runs_model_decodes_with_the_runtimes_noise(fresh_seed, tiny_cfg):
    """TorchModel: rows with one seed share their noise (the same image from the same code), other seeds differ."""
    import torch

    from sami_rt.sampling.schedule import make_abar
    from train.disk_checks import TorchModel
    from train.loop import build_model

    torch.manual_seed(fresh_seed)
    model, cfg = build_model(tiny_cfg)
    abar = make_abar(cfg.schedule, cfg.T, cfg.beta_start, cfg.beta_end)
    m = TorchModel(model.eval().requires_grad_(False), cfg, abar, steps=3)
    rng = np.random.default_rng(fresh_seed)
    z = np.repeat(rng.normal(size=(1, cfg.latent_dim)), 3, 0)
    s = int(rng.integers(2**32))
    x = m.decode(z, np.array([s, s, s + 1]))
    assert x.shape == (3, 1, cfg.image_size, cfg.image_size)
    assert np.array_equal(x[0], x[1]) and not np.allclose(x[0], x[2])
    assert m.encode(x).shape == (3, cfg.latent_dim)
