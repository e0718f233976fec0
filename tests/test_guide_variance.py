"""A guide far from the model's training images is said in a note: the bundle records the range of the
encoder's mean log posterior variance over training-distribution images (export), the runtime compares a
guide's with it (``VarianceRange.far_outside``)."""

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from sami_rt.contract.bundle import BundleError, read_bundle
from sami_rt.contract.manifest import GUIDE_VARIANCE_MARGIN, Manifest, VarianceRange, mean_log_variance
from sami_rt.media.disks import render_disks
from sami_rt.runtime import MODELS_DIR, Runtime

GUIDE = Path(__file__).resolve().parents[1] / "examples" / "guide.png"


def _disks(rng, n, cfg):
    """Training-distribution images of a disks bundle (its recorded configuration), in model space."""
    r, size = cfg["disk_radius"], cfg["image_size"]
    f = np.stack([rng.uniform(r, size - r, n), rng.uniform(r, size - r, n),
                  rng.uniform(cfg["disk_bg_min"], cfg["disk_bg_max"], n)], axis=1)
    return (2 * render_disks(f, size, r, cfg["disk_foreground"]) - 1).astype(np.float32)[:, None]


DISKS_SMALL = MODELS_DIR / "disks-small"  # the model whose v1 manifest is kept below, and whose range the tests quote
V1_MANIFEST = Path(__file__).resolve().parent / "data" / "manifests_v1" / "disks-small.json"


def _v1_copy(root: Path) -> Path:
    """A copy of the shipped disks-small model with the manifest it shipped with before the range was recorded."""
    shutil.copytree(DISKS_SMALL, root)
    shutil.copy(V1_MANIFEST, root / "manifest.json")
    return root


@pytest.fixture(scope="module")
def ranged(tmp_path_factory):
    """The shipped disks-small model, whose manifest records the range of the export's 256 held-out disks (added by
    ``export/annotate.py``; that draw spans -5.19 .. -1.74; 7 of 20,000 other disks fell below it by more than
    the margin, down to -6.44)."""
    return DISKS_SMALL


def _noise(rng):
    return rng.uniform(-1, 1, (1, 1, 32, 32)).astype(np.float32)


def test_a_noise_guide_gets_a_note_and_a_disk_guide_none(ranged, fresh_seed):
    rt = Runtime(ranged, device="cpu")
    r = rt.bundle.manifest.variance_range
    assert r is not None and r.images == 256 and r.low < r.high
    rng = np.random.default_rng(fresh_seed)
    _, var = rt.encode(_noise(rng))
    assert mean_log_variance(var)[0] > r.high + GUIDE_VARIANCE_MARGIN  # really outside, by the margin
    s = rt.generate(guide=_noise(rng), n=1, steps=2, sampler="ddim")
    note = [n for n in s.notes if "looks unlike the model's training images" in n]
    assert len(note) == 1 and note[0].startswith("the guide looks unlike") and "samples may not resemble it" in note[0]
    assert f"{r.low:.2f} .. {r.high:.2f}" in note[0]
    s = rt.generate(guide=str(GUIDE), n=1, steps=2, sampler="ddim")
    assert not [n for n in s.notes if "looks unlike" in n], s.notes
    # fresh disks: about 1 in 3,000 falls beyond the margin, so count rather than demand none; the most typical
    # one of the draw, guiding a sample, gets no note
    disks = _disks(rng, 64, rt.bundle.manifest.training["config"])
    m = mean_log_variance(rt.encode(disks)[1])
    assert ((m < r.low - GUIDE_VARIANCE_MARGIN) | (m > r.high + GUIDE_VARIANCE_MARGIN)).sum() <= 2, m
    typical = disks[np.argsort(m)[len(m) // 2]][None]
    assert not [n for n in rt.generate(guide=typical, n=1, steps=2, sampler="ddim").notes if "looks unlike" in n]


def test_a_bundle_without_the_record_gives_no_note(tmp_path, fresh_seed):
    rt = Runtime(_v1_copy(tmp_path / "v1"), device="cpu")
    assert rt.bundle.manifest.variance_range is None  # bundles exported before the record
    s = rt.generate(guide=_noise(np.random.default_rng(fresh_seed)), n=1, steps=2, sampler="ddim")
    assert not [n for n in s.notes if "looks unlike" in n]


def test_annotate_adds_the_exports_range_to_an_older_bundle_and_changes_nothing_else(tmp_path):
    """export/annotate.py measures through the bundle's ONNX encoder what the export measures through PyTorch
    (the same held-out images, rebuilt from the recorded configuration), and rewrites only manifest.json."""
    pytest.importorskip("torch")
    from export.annotate import annotate
    from export.core import variance_range
    from sami_reference import load_reference
    from train.config import Config

    root = _v1_copy(tmp_path / "old")
    before = {f.name: f.read_bytes() for f in root.iterdir() if f.name != "manifest.json"}
    lines = []
    assert annotate(root, log=lines.append)
    b = read_bundle(root)
    r = b.manifest.variance_range
    assert b.manifest.format_version == 2 and r.images == 256 and b.manifest.export["annotated"]["by"] == "export/annotate.py"
    assert {f.name: f.read_bytes() for f in root.iterdir() if f.name != "manifest.json"} == before
    old = read_bundle(root).manifest
    for f in ("graphs", "reference", "training", "evaluation", "sampling_scale", "flops"):
        assert getattr(old, f) == getattr(Manifest.from_json(json.loads(V1_MANIFEST.read_text()), "v1"), f), f
    # the PyTorch twin: the reference weights through export.core.variance_range, as export/run.py measures
    model, _ = load_reference(b)
    twin = variance_range(lambda x: model.encoder(x)[1], Config.from_dict(b.manifest.training["config"]), lines.append)
    assert abs(twin.low - r.low) < 1e-4 and abs(twin.high - r.high) < 1e-4
    # and what the shipped bundle records is this measurement
    shipped = read_bundle(DISKS_SMALL).manifest.variance_range
    assert abs(shipped.low - r.low) < 1e-5 and abs(shipped.high - r.high) < 1e-5


def test_the_cli_prints_the_note_on_stderr(ranged, tmp_path, fresh_seed):
    import cv2
    from click.testing import CliRunner

    from sami_rt.cli.main import main

    pixels = np.random.default_rng(fresh_seed).integers(0, 256, (32, 32), dtype=np.uint8)
    cv2.imwrite(str(tmp_path / "noise.png"), pixels)
    res = CliRunner().invoke(main, ["generate", "--guide", str(tmp_path / "noise.png"), "--model", str(ranged),
                                    "--device", "cpu", "-n", "1", "--steps", "2", "-o", str(tmp_path / "s.png")])
    assert res.exit_code == 0, res.output
    lines = [ln for ln in res.stderr.splitlines() if "looks unlike" in ln]
    assert len(lines) == 1 and lines[0].startswith(f"note: guide {tmp_path / 'noise.png'} looks unlike the model's")
    assert "looks unlike" not in res.stdout


def test_the_record_round_trips_through_the_contract_and_is_checked():
    m = read_bundle(DISKS_SMALL, verify=False).manifest
    r = VarianceRange(-5.5, -1.6, (0.01, 0.99), 256)
    back = Manifest.from_json(json.loads(m.replace(variance_range=r).dumps()), "m.json")
    assert back.variance_range == r
    assert Manifest.from_json(json.loads(m.replace(variance_range=None).dumps()), "m.json").variance_range is None
    assert back.format_version == 2
    for bad in ({"range": [1.0]}, {"range": [0.0, -1.0]}, {"range": [0, float("nan")]},
                {"range": [0, 1], "quantiles": [0.0, 2.0]}, {"range": [0, 1], "images": -1}, [1, 2]):
        d = json.loads(m.dumps())
        d["posterior_variance"] = bad
        with pytest.raises(BundleError, match="posterior_variance"):
            Manifest.from_json(d, "m.json")


def test_far_outside_is_the_margin_beyond_the_range():
    r = VarianceRange(-4.0, -2.0)
    D = 8
    assert r.far_outside(np.full(D, np.exp(-3.0))) is None
    assert r.far_outside(np.full(D, np.exp(-2.0 + GUIDE_VARIANCE_MARGIN * 0.9))) is None
    assert r.far_outside(np.full((1, D), np.exp(-2.0 + GUIDE_VARIANCE_MARGIN * 1.1))) == pytest.approx(-0.9)
    assert r.far_outside(np.full(D, np.exp(-5.2))) == pytest.approx(-5.2)


def test_the_export_records_the_range_of_held_out_images(tmp_path):
    pytest.importorskip("torch")
    from export.core import VARIANCE_IMAGES, variance_range
    from tests.conftest import tiny_config
    from train.nets import SAMI

    cfg = tiny_config()
    model = SAMI(cfg.architecture()).eval()
    lines = []
    r = variance_range(lambda x: model.encoder(x)[1], cfg, lines.append)
    assert r.images == VARIANCE_IMAGES and np.isfinite([r.low, r.high]).all() and r.low <= r.high
    assert "posterior variance range: mean log variance" in lines[0]
    assert variance_range(lambda x: model.encoder(x)[1], cfg.replace(dataset="folder", data_path=str(tmp_path / "none")),
                          lines.append) is None
    assert "not recorded" in lines[1]
