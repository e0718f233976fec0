"""The disks figures' pieces (train/factor_figures.py) on images and paths whose answers are known."""

import numpy as np
import pytest
import torch

from train.data import render_disks
from train.factor_figures import axis_r2_table, best_distinct_axes, find_disks, judge_path


def test_find_disks_recovers_rendered_centres(fresh_seed):
    rng = np.random.default_rng(fresh_seed)
    f = np.c_[rng.uniform(4, 28, (40, 2)), rng.uniform(0, 0.6, 40)]
    imgs = render_disks(torch.from_numpy(f), 32, 4.0, 1.0)[:, 0].numpy()
    counts, centres = find_disks(imgs, 1.0)
    assert (counts == 1).all()
    assert np.abs(centres - f[:, :2]).max() < 0.3


def test_find_disks_counts_a_second_blob_and_noise_free_images(fresh_seed):
    rng = np.random.default_rng(fresh_seed)
    bg = rng.uniform(0, 0.5)
    two = torch.maximum(render_disks(torch.tensor([[8.0, 8.0, bg]]), 32, 4.0, 1.0),
                     render_disks(torch.tensor([[24.0, 22.0, bg]]), 32, 4.0, 1.0))[:, 0].numpy()
    flat = np.full((1, 32, 32), bg * 2 - 1)
    counts, centres = find_disks(np.r_[two, flat], 1.0)
    assert counts.tolist() == [2, 0] and np.isnan(centres[1]).all()


def test_judge_path_passes_an_even_path_and_fails_jumps_and_reversals():
    even = np.c_[np.linspace(5, 25, 8), np.linspace(10, 12, 8)]
    ones = np.ones(8, int)
    assert judge_path(ones, even, 0.35)["passed"]
    jump = even.copy()
    jump[1:4] = even[0]  # stays at A, then jumps
    r = judge_path(ones, jump, 0.35)
    assert not r["passed"] and r["monotone"] and r["max_step"] > 0.35
    back = even.copy()
    back[3], back[4] = even[4], even[3]
    assert not judge_path(ones, back, 0.35)["monotone"]
    twice = ones.copy()
    twice[5] = 2
    assert not judge_path(twice, even, 0.35)["passed"]
    # against the true disks: a path that never leaves A's side misses B; the even path reaches both
    ends = even[[0, -1]] + 0.5
    assert judge_path(ones, even, 0.35, ends)["passed"]
    still = np.repeat(even[:1], 8, 0)
    r = judge_path(ones, still, 0.35, ends)
    assert not r["passed"] and r["monotone"] and not r["reaches_ends"]


def test_axis_table_assigns_one_axis_per_factor(fresh_seed, tmp_path):
    rng = np.random.default_rng(fresh_seed)
    f = rng.uniform(size=(500, 3))
    codes = np.c_[rng.normal(size=500), f[:, 2], f[:, 0] + 0.1 * rng.normal(size=500), f[:, 1]]
    t = axis_r2_table(codes, f, ("x", "y", "background"), tmp_path / "t.csv")
    assert t["factor_axes"] == {"x": 2, "y": 3, "background": 1}
    assert t["factor_axis_r2"]["y"] == pytest.approx(1.0, abs=1e-9) and t["factor_axis_r2"]["x"] > 0.8
    lines = (tmp_path / "t.csv").read_text().splitlines()
    assert lines[0] == "axis,x,y,background" and len(lines) == 5
    assert best_distinct_axes(np.array([[0.9, 0.8], [0.1, 0.7]])) == [0, 1]  # distinct even when one axis wins both
