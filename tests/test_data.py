"""Data sets: the disks generator against its own factors; readers on fixtures the tests write."""

import gzip
import os
import struct

import numpy as np
import pytest
import torch

from sami_rt.contract.format import ImageSpec, Preprocess
from tests.conftest import tiny_config
from train.data import CelebA, DataError, ImageFolder, load_fashion_mnist, make_disks, render_disks


def test_disk_factors_match_their_images(fresh_seed):
    seed = fresh_seed % 10**6
    x, f = make_disks(200, seed, size=32, radius=4.0, foreground=0.5)
    assert x.shape == (200, 1, 32, 32) and f.shape == (200, 3)
    img = (x[:, 0].double() + 1) / 2  # back to [0, 1]
    bg, fg = f[:, 2, None, None], 0.5
    cover = (img - bg) / (fg - bg)  # disk coverage in [0, 1]
    keep = (fg - f[:, 2]).abs() > 0.1  # coverage is ill-conditioned where the disk matches the background
    c = torch.arange(32, dtype=torch.float64) + 0.5
    cx = (cover * c[None, None, :]).sum((1, 2)) / cover.sum((1, 2))
    cy = (cover * c[None, :, None]).sum((1, 2)) / cover.sum((1, 2))
    # to within the discretisation of the one-pixel anti-aliasing ramp
    assert torch.allclose(cx[keep], f[keep, 0], atol=0.05) and torch.allclose(cy[keep], f[keep, 1], atol=0.05)
    # disk area (anti-aliased coverage) is pi r^2 up to the ramp's discretisation
    assert torch.allclose(cover[keep].sum((1, 2)), torch.full((int(keep.sum()),), np.pi * 16, dtype=torch.float64),
                          rtol=0.02)
    # corners are background
    assert torch.allclose(img[:, 0, 0], f[:, 2], atol=1e-6)
    assert (f[:, :2] >= 4).all() and (f[:, :2] <= 28).all() and (f[:, 2] >= 0).all() and (f[:, 2] <= 1).all()


def test_disks_are_deterministic_per_seed():
    a, fa = make_disks(10, 7)
    b, fb = make_disks(10, 7)
    c, _ = make_disks(10, 8)
    assert torch.equal(a, b) and torch.equal(fa, fb) and not torch.equal(a, c)
    assert torch.equal(render_disks(fa), a)


def _write_idx(path, arr: np.ndarray):
    header = b"\x00\x00\x08" + bytes([arr.ndim]) + struct.pack(">" + "I" * arr.ndim, *arr.shape)
    with gzip.open(path, "wb") as fh:
        fh.write(header + arr.astype(np.uint8).tobytes())


def test_fashion_mnist_reader_on_idx_files(tmp_path, fresh_seed):
    rng = np.random.default_rng(fresh_seed)
    imgs = rng.integers(0, 256, size=(5, 28, 28))
    labels = rng.integers(0, 10, size=5)
    _write_idx(tmp_path / "train-images-idx3-ubyte.gz", imgs)
    _write_idx(tmp_path / "train-labels-idx1-ubyte.gz", labels)
    x, y = load_fashion_mnist(str(tmp_path), "train", 32)
    assert x.shape == (5, 1, 32, 32) and torch.equal(y, torch.from_numpy(labels))
    np.testing.assert_allclose(x[:, 0, 2:30, 2:30].numpy(), imgs / 127.5 - 1, atol=1e-6)
    assert (x[:, 0, :2] == -1).all()  # padding is black
    # --n-train N trains on the first N images of the split and leaves the rest for validation
    from train.config import get_config
    from train.data import BatchSource

    src = BatchSource(get_config("fashion-mnist").replace(data_path=str(tmp_path), n_train=3))
    assert len(src) == 3 and torch.equal(src.images, x[:3])
    assert len(BatchSource(get_config("fashion-mnist").replace(data_path=str(tmp_path)))) == 5
    with pytest.raises(DataError, match="split 'test' not found"):
        load_fashion_mnist(str(tmp_path), "test")
    (tmp_path / "t10k-images-idx3-ubyte.gz").write_bytes(gzip.compress(b"\x00\x00\x08\x03" + struct.pack(">III", 5, 28, 28) + b"\x01" * 10))
    _write_idx(tmp_path / "t10k-labels-idx1-ubyte.gz", labels)
    with pytest.raises(DataError, match="truncated"):
        load_fashion_mnist(str(tmp_path), "test")


def test_fashion_mnist_from_the_debian_package():
    try:
        x, y = load_fashion_mnist("", "test")
    except DataError:
        if os.environ.get("CI"):
            pytest.fail("CI must install the Debian package dataset-fashion-mnist (.ci/run does)")
        pytest.skip("Debian package dataset-fashion-mnist is not installed (apt-get install dataset-fashion-mnist)")
    assert x.shape == (10000, 1, 32, 32) and set(y.tolist()) == set(range(10))


def _png(path, arr):
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr).save(path)


def test_image_folder_crops_resizes_and_scales(tmp_path, fresh_seed):
    rng = np.random.default_rng(fresh_seed)
    _png(tmp_path / "a" / "one.png", rng.integers(0, 256, size=(40, 60, 3), dtype=np.uint8))
    _png(tmp_path / "two.png", np.full((20, 20), 255, dtype=np.uint8))
    (tmp_path / "notes.txt").write_text("not an image")
    ds = ImageFolder(str(tmp_path), ImageSpec(3, 16, 16))
    assert len(ds) == 2
    assert ds[0].shape == (3, 16, 16) and ds[0].min() >= -1 and ds[0].max() <= 1
    assert torch.allclose(ds[1], torch.ones(3, 16, 16))
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no images"):
        ImageFolder(str(tmp_path / "empty"), ImageSpec(3, 16, 16))
    with pytest.raises(DataError, match="does not exist or is not a directory"):
        ImageFolder(str(tmp_path / "missing"), ImageSpec(3, 16, 16))


def test_celeba_reader_with_attributes_and_partition(tmp_path, fresh_seed):
    rng = np.random.default_rng(fresh_seed)
    names = ["Smiling", "Male", "Eyeglasses"]
    rows, parts = [], []
    for i in range(1, 6):
        fname = f"{i:06d}.jpg"
        from PIL import Image

        (tmp_path / "img_align_celeba").mkdir(exist_ok=True)
        Image.fromarray(rng.integers(0, 256, size=(218, 178, 3), dtype=np.uint8)).save(tmp_path / "img_align_celeba" / fname)
        attrs = rng.choice([-1, 1], size=3)
        rows.append((fname, attrs))
        parts.append(f"{fname} {0 if i <= 3 else 2}")
    text = f"{len(rows)}\n" + " ".join(names) + "\n" + "\n".join(f"{f} " + " ".join(str(a) for a in at) for f, at in rows)
    (tmp_path / "list_attr_celeba.txt").write_text(text + "\n")
    (tmp_path / "list_eval_partition.txt").write_text("\n".join(parts) + "\n")
    spec = ImageSpec(3, 32, 32, Preprocess(crop=140))
    train, test = CelebA(str(tmp_path), spec, "train"), CelebA(str(tmp_path), spec, "test")
    assert len(train) == 3 and len(test) == 2 and train.factor_names == tuple(names)
    assert train[0].shape == (3, 32, 32)
    want = torch.tensor([[a > 0 for a in at] for _, at in rows[:3]], dtype=torch.float64)
    assert torch.equal(train.factors, want)
    (tmp_path / "img_align_celeba" / "000005.jpg").unlink()
    with pytest.raises(DataError, match="000005.jpg listed in .* is missing"):
        CelebA(str(tmp_path), spec, "test")


@pytest.mark.parametrize("dataset", ["disks", "dsprites", "fashion-mnist"])
def test_colour_images_from_grey_data_are_refused_before_training(dataset):
    """--channels 3 on a grey data set: one sentence from the data source (train/run.py prints it as one line),
    not a convolution's shape error at the first step; checked before any data is read."""
    from train.data import BatchSource, DataError

    with pytest.raises(DataError, match=f"the {dataset} data are grey .* asks for 3-channel images"):
        BatchSource(tiny_config(dataset=dataset, channels=3))
