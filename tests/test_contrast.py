"""The augmentation-invariance term (train/contrast.py): InfoNCE against its definition written out, the
augmentations against the moves they stand for, and training with it: resumed exactly, the head
checkpointed and never part of the model."""

import json
import math

import numpy as np
import pytest
import torch

from tests.conftest import tiny_config
from train.contrast import GAIN, SHIFT_PX, ZOOM, augment, info_nce
from train.loop import CHECKPOINT, Trainer, load_checkpoint


def test_info_nce_equals_its_definition(fresh_seed):
    g = torch.Generator().manual_seed(fresh_seed)
    B, D, tau = 7, 5, 0.3
    h1, h2 = torch.randn(B, D, generator=g, dtype=torch.float64), torch.randn(B, D, generator=g, dtype=torch.float64)
    v = np.concatenate([h1.numpy(), h2.numpy()])
    v /= np.linalg.norm(v, axis=1, keepdims=True)
    total = 0.0
    for i in range(2 * B):  # -log( exp(s_i,partner) / sum_{k != i} exp(s_ik) ), s = cos / tau
        partner = (i + B) % (2 * B)
        s = v @ v[i] / tau
        total += -(s[partner] - math.log(sum(math.exp(s[k]) for k in range(2 * B) if k != i)))
    assert info_nce(h1, h2, tau).item() == pytest.approx(total / (2 * B), rel=1e-10)
    # views that agree score lower than views drawn independently
    assert info_nce(h1, h1 + 0.01 * h2, tau) < info_nce(h1, h2, tau)


def _draws(n, zoom=0.5, rot=0.5, sx=0.5, sy=0.5, flip=0.9, gain=0.5):
    return torch.tensor([[zoom, rot, sx, sy, flip, gain]] * n, dtype=torch.float32)


def test_augment_is_the_identity_at_neutral_draws_and_each_move_what_it_says(fresh_seed):
    g = torch.Generator().manual_seed(fresh_seed)
    x = torch.rand(3, 1, 16, 16, generator=g) * 2 - 1
    assert torch.allclose(augment(x, _draws(3)), x, atol=1e-5)
    assert torch.allclose(augment(x, _draws(3, flip=0.1)), torch.flip(x, dims=[3]), atol=1e-5)
    # a shift of exactly one pixel to the right (u = (1 / SHIFT_PX + 1) / 2), the ground (-1) entering on the left
    u = (1 / SHIFT_PX + 1) / 2
    shifted = augment(x, _draws(3, sx=u))
    assert torch.allclose(shifted[..., 1:], x[..., :-1], atol=1e-5)
    assert torch.allclose(shifted[..., 0], torch.full_like(shifted[..., 0], -1.0))
    down = augment(x, _draws(3, sy=u))
    assert torch.allclose(down[..., 1:, :], x[..., :-1, :], atol=1e-5)
    # the gain scales [0, 1] intensities: the ground stays at -1
    lo = augment(x, _draws(3, gain=0.0))
    assert torch.allclose((lo + 1) / 2, ((x + 1) / 2) * (1 - GAIN), atol=1e-5)
    # a zoom in (u = 1: 1 + ZOOM) of a centred disk makes it larger
    yy, xx = torch.meshgrid(torch.arange(16.0), torch.arange(16.0), indexing="ij")
    disk = torch.where((yy - 7.5) ** 2 + (xx - 7.5) ** 2 < 16, 1.0, -1.0).reshape(1, 1, 16, 16)
    area = lambda im: ((im + 1) / 2).sum().item()  # noqa: E731
    assert area(augment(disk, _draws(1, zoom=1.0))) == pytest.approx(area(disk) * (1 + ZOOM) ** 2, rel=0.1)
    assert area(augment(disk, _draws(1, zoom=0.0))) == pytest.approx(area(disk) * (1 - ZOOM) ** 2, rel=0.1)


def test_training_with_the_term_resumes_exactly_and_keeps_the_head_out_of_the_model(tmp_path, fresh_seed):
    seed = fresh_seed % 1000
    cfg = tiny_config(steps=6, seed=seed, n_train=0, aux_contrast=1.0)
    Trainer(cfg, tmp_path / "full").run()
    Trainer(cfg, tmp_path / "part").run(until=3)
    Trainer(cfg, tmp_path / "part", resume=True).run()
    full, part = load_checkpoint(tmp_path / "full" / CHECKPOINT), load_checkpoint(tmp_path / "part" / CHECKPOINT)
    for key in ("model", "ema", "head"):
        assert full[key].keys() == part[key].keys()
        assert all(torch.equal(full[key][k], part[key][k]) for k in full[key]), key
    assert not any("head" in k or k.startswith("net.") for k in full["model"])  # the model's weights are its own
    logged = [json.loads(ln) for ln in (tmp_path / "full" / "metrics.jsonl").read_text().splitlines()]
    assert all(math.isfinite(r["contrast"]) and r["contrast"] > 0 for r in logged)
    # the term changes the encoder: the same run without it ends elsewhere
    Trainer(cfg.replace(aux_contrast=0.0), tmp_path / "plain").run()
    plain = load_checkpoint(tmp_path / "plain" / CHECKPOINT)
    assert plain["head"] is None
    enc = [k for k in full["model"] if k.startswith("encoder.")]
    assert any(not torch.equal(full["model"][k], plain["model"][k]) for k in enc)
    # contrasting posterior samples instead of means is another run, resumed as exactly
    cs = cfg.replace(aux_contrast_input="sample")
    Trainer(cs, tmp_path / "sfull").run()
    Trainer(cs, tmp_path / "spart").run(until=3)
    Trainer(cs, tmp_path / "spart", resume=True).run()
    sfull, spart = load_checkpoint(tmp_path / "sfull" / CHECKPOINT), load_checkpoint(tmp_path / "spart" / CHECKPOINT)
    assert all(torch.equal(sfull["model"][k], spart["model"][k]) for k in sfull["model"])
    assert any(not torch.equal(sfull["model"][k], full["model"][k]) for k in enc)
    # resuming a run trained without the head, with it, is one clear error
    with pytest.raises(RuntimeError, match="trained with --aux-contrast 0"):
        Trainer(cfg, tmp_path / "plain", resume=True)
    with pytest.raises(RuntimeError, match="trained with --aux-contrast 1.0"):  # and the other way round
        Trainer(cfg.replace(aux_contrast=0.0), tmp_path / "full", resume=True)
