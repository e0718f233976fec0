"""Data sets: the procedural disks, dSprites (procedural, train/dsprites.py), Fashion-MNIST (Debian package
files), image folders and CelebA.

Every data set yields images as float32 tensors [N, C, H, W] scaled to [-1, 1]; the disks also return
their generative factors. Minibatches are drawn i.i.d. from a ``torch.Generator`` that the training loop
owns and checkpoints, so a resumed run draws exactly the batches the uninterrupted run would have drawn.
"""

from __future__ import annotations

import gzip
import os
import struct
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch

from sami_rt.contract.format import ImageSpec, Preprocess
from sami_rt.errors import DataError  # noqa: F401  (re-exported: train's callers import it from here)
from sami_rt.media.images import IMAGE_EXTS
from train.dsprites import sample_classes

DISK_FACTORS = ("x", "y", "background")
FASHION_MNIST_DIRS = ("/usr/share/datasets/fashion-mnist",)




# ----------------------------------------------------------------------------------------------- disks
def sample_disk_factors(n: int, size: int = 32, radius: float = 4.0, generator: torch.Generator | None = None,
                        background: tuple[float, float] = (0.0, 1.0)) -> torch.Tensor:
    """Factors [n, 3] (centre x, centre y in pixels; background intensity in ``background``), each uniform.

    The centre is drawn so that the whole disk lies inside the image.
    """
    u = torch.rand(n, 3, generator=generator, dtype=torch.float64)
    lo, hi = radius, size - radius
    f = torch.empty_like(u)
    f[:, :2] = lo + (hi - lo) * u[:, :2]
    f[:, 2] = background[0] + (background[1] - background[0]) * u[:, 2]
    return f


def render_disks(factors: torch.Tensor, size: int = 32, radius: float = 4.0, foreground: float = 0.5) -> torch.Tensor:
    """Anti-aliased disks [n, 1, size, size] in [-1, 1] from factors [n, 3] (x, y, background), drawn by
    ``sami_rt.media.disks.render_disks`` (coverage clamp(radius + 0.5 - distance, 0, 1) from each pixel centre)."""
    from sami_rt.media.disks import render_disks as draw

    img = torch.from_numpy(draw(factors.detach().cpu().to(torch.float64).numpy(), size, radius, foreground))
    return (img * 2 - 1).to(torch.float32)[:, None]


def make_disks(n: int, seed: int, size: int = 32, radius: float = 4.0, foreground: float = 0.5,
               background: tuple[float, float] = (0.0, 1.0)):
    """Deterministic disks data set: (images [n,1,H,W] in [-1,1], factors [n,3] float64)."""
    g = torch.Generator().manual_seed(int(seed))
    f = sample_disk_factors(n, size, radius, g, background)
    return render_disks(f, size, radius, foreground), f


def disk_options(cfg) -> dict:
    """The disks generator's keyword arguments from a configuration."""
    return dict(size=cfg.image_size, radius=cfg.disk_radius, foreground=cfg.disk_foreground,
                background=(cfg.disk_bg_min, cfg.disk_bg_max))


# ------------------------------------------------------------------------------------- Fashion-MNIST
def _read_idx(path: Path) -> np.ndarray:
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as fh:
        data = fh.read()
    if len(data) < 4 or data[0:2] != b"\x00\x00":
        raise DataError(f"{path} is not an IDX file (bad magic number)")
    ndim = data[3]
    dims = struct.unpack(">" + "I" * ndim, data[4 : 4 + 4 * ndim])
    arr = np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim)
    if arr.size != int(np.prod(dims)):
        raise DataError(f"{path} is truncated: expected {int(np.prod(dims))} values, found {arr.size}")
    return arr.reshape(dims)


def find_fashion_mnist(root: str = "") -> Path:
    candidates = [Path(root)] if root else [Path(d) for d in FASHION_MNIST_DIRS]
    for d in candidates:
        if d.is_dir() and list(d.glob("train-images-idx3-ubyte*")):
            return d
    where = root or " or ".join(FASHION_MNIST_DIRS)
    raise DataError(
        f"Fashion-MNIST files (train-images-idx3-ubyte.gz) not found in {where}; "
        "install the Debian package 'dataset-fashion-mnist' or pass --data-path DIR"
    )


def load_fashion_mnist(root: str = "", split: str = "train", pad_to: int = 32):
    """Fashion-MNIST images [N,1,pad_to,pad_to] in [-1,1] (28x28 padded with black) and labels [N]. The decoded
    arrays are kept per file (and its modification time): an evaluation reads each split once. The tensors
    share them, so callers index or copy rather than write in place."""
    d = find_fashion_mnist(root)
    prefix = "train" if split == "train" else "t10k"
    img_file = next(iter(sorted(d.glob(f"{prefix}-images-idx3-ubyte*"))), None)
    lab_file = next(iter(sorted(d.glob(f"{prefix}-labels-idx1-ubyte*"))), None)
    if img_file is None or lab_file is None:
        raise DataError(f"Fashion-MNIST split {split!r} not found in {d}")
    imgs, labels = _fashion_arrays(str(img_file), str(lab_file), img_file.stat().st_mtime_ns,
                                   lab_file.stat().st_mtime_ns, pad_to)
    return torch.from_numpy(imgs), torch.from_numpy(labels)


@lru_cache(maxsize=4)
def _fashion_arrays(img_file: str, lab_file: str, _img_mtime: int, _lab_mtime: int, pad_to: int):
    from sami_rt.media.images import frame

    imgs = _read_idx(Path(img_file)).astype(np.float32) / 127.5 - 1.0
    labels = _read_idx(Path(lab_file)).astype(np.int64)
    if pad_to < 28 or (pad_to - 28) % 2:
        raise DataError(f"cannot frame 28x28 Fashion-MNIST images in {pad_to}x{pad_to} (28 + an even border)")
    # the preprocessing the bundle records (Preprocess.pad), applied by the runtime's to_model as well
    spec = ImageSpec(1, pad_to, pad_to, Preprocess(pad=(pad_to - 28) // 2))
    return np.ascontiguousarray(frame(imgs, spec)[:, None]), labels.copy()


# ------------------------------------------------------------------------------ image folder, CelebA
def load_image(path: str | os.PathLike, spec: ImageSpec) -> torch.Tensor:
    """One image as [C, H, W] in [-1, 1], brought to the model as the runtime brings it
    (``sami_rt.media.images.read_image``: the spec's crop, colour, resize and padding)."""
    from sami_rt.errors import ImageError
    from sami_rt.media.images import read_image

    try:
        return torch.from_numpy(read_image(path, spec))
    except ImageError as e:
        raise DataError(f"cannot read image: {e}") from None


class ImageFolder:
    """All images under a directory (recursively), loaded lazily through the model's preprocessing."""

    def __init__(self, root: str, spec: ImageSpec):
        self.root = Path(root)
        if not self.root.is_dir():
            raise DataError(f"image folder {root} does not exist or is not a directory")
        self.files = sorted(p for p in self.root.rglob("*") if p.suffix.lower() in IMAGE_EXTS)
        if not self.files:
            raise DataError(f"no images ({', '.join(IMAGE_EXTS)}) found under {root}")
        self.spec = spec
        self.factors = None
        self.factor_names: tuple[str, ...] = ()

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, i: int) -> torch.Tensor:
        return load_image(self.files[i], self.spec)


class CelebA(ImageFolder):
    """CelebA aligned images (``img_align_celeba/``) with the 40 binary attributes of ``list_attr_celeba.txt``.

    ``split`` follows ``list_eval_partition.txt`` when present (0 train, 1 valid, 2 test); attributes are
    returned as 0/1 factors.
    """

    def __init__(self, root: str, spec: ImageSpec, split: str = "train"):
        root_p = Path(root)
        attr_file = root_p / "list_attr_celeba.txt"
        img_dir = root_p / "img_align_celeba"
        if not attr_file.is_file():
            raise DataError(f"CelebA attribute file {attr_file} not found")
        if not img_dir.is_dir():
            raise DataError(f"CelebA image directory {img_dir} not found")
        lines = attr_file.read_text().splitlines()
        try:
            n = int(lines[0].strip())
            names = tuple(lines[1].split())
            rows = [ln.split() for ln in lines[2 : 2 + n]]
        except (ValueError, IndexError):
            raise DataError(f"{attr_file} is not a CelebA attribute file (count, names, rows)") from None
        if len(rows) != n or any(len(r) != len(names) + 1 for r in rows):
            raise DataError(f"{attr_file}: expected {n} rows of a file name and {len(names)} attributes")
        part = {}
        part_file = root_p / "list_eval_partition.txt"
        if part_file.is_file():
            for ln in part_file.read_text().splitlines():
                if ln.strip():
                    fname, p = ln.split()
                    part[fname] = int(p)
        want = {"train": 0, "valid": 1, "test": 2, "all": None}[split]
        keep = [r for r in rows if want is None or part.get(r[0], 0) == want]
        self.root, self.spec = root_p, spec
        self.files = [img_dir / r[0] for r in keep]
        missing = [f for f in self.files if not f.is_file()]
        if missing:
            raise DataError(f"CelebA image {missing[0]} listed in {attr_file} is missing ({len(missing)} in all)")
        self.factors = torch.tensor([[int(v) > 0 for v in r[1:]] for r in keep], dtype=torch.float64)
        self.factor_names = names


# ------------------------------------------------------------------------------------ batch sources
GREY_DATASETS = ("disks", "dsprites", "fashion-mnist")  # one channel always (folders and CelebA convert)


def check_channels(cfg) -> None:
    """DataError, one sentence, where the configuration asks a grey data set for colour images."""
    if cfg.channels != 1 and cfg.dataset in GREY_DATASETS:
        raise DataError(f"the {cfg.dataset} data are grey (one channel), but the configuration asks for "
                        f"{cfg.channels}-channel images; leave --channels at 1, or train on a folder or CelebA")


class BatchSource:
    """Draws i.i.d. minibatches with a caller-owned generator (checkpointable, identical on resume)."""

    def __init__(self, cfg, split: str = "train"):
        check_channels(cfg)
        self.cfg = cfg
        self.images: torch.Tensor | None = None
        self.lazy: ImageFolder | None = None
        self.fresh = False
        if cfg.dataset == "disks":
            if cfg.n_train == 0 and split == "train":
                self.fresh = True
            else:
                seed = cfg.data_seed if split == "train" else cfg.data_seed + 1_000_003
                n = cfg.n_train if split == "train" else cfg.eval_n
                self.images, _ = make_disks(n, seed, **disk_options(cfg))
        elif cfg.dataset == "dsprites":
            self.dsprites = dsprites_source(cfg)
            if cfg.n_train == 0 and split == "train":
                self.fresh = True
            else:
                g = torch.Generator().manual_seed(cfg.data_seed if split == "train" else cfg.data_seed + 1_000_003)
                self.images = self.dsprites(sample_classes(cfg.n_train if split == "train" else cfg.eval_n, g))
        elif cfg.dataset == "fashion-mnist":
            self.images, _ = load_fashion_mnist(cfg.data_path, split, cfg.image_size)
            if split == "train" and cfg.n_train:  # the rest of the training split is left for validation
                self.images = self.images[: cfg.n_train]
        elif cfg.dataset == "folder":
            self.lazy = ImageFolder(cfg.data_path, cfg.image_spec())
        elif cfg.dataset == "celeba":
            self.lazy = CelebA(cfg.data_path, cfg.image_spec(), split)
        else:
            raise DataError(f"unknown dataset {cfg.dataset!r}; expected disks, dsprites, fashion-mnist, folder or celeba")

    def __len__(self) -> int:
        if self.fresh:
            return 0
        return len(self.images) if self.images is not None else len(self.lazy)

    def sample(self, n: int, generator: torch.Generator) -> torch.Tensor:
        cfg = self.cfg
        if self.fresh and cfg.dataset == "dsprites":
            return self.dsprites(sample_classes(n, generator))
        if self.fresh:
            f = sample_disk_factors(n, cfg.image_size, cfg.disk_radius, generator, (cfg.disk_bg_min, cfg.disk_bg_max))
            return render_disks(f, cfg.image_size, cfg.disk_radius, cfg.disk_foreground)
        idx = torch.randint(len(self), (n,), generator=generator)
        if self.images is not None:
            return self.images[idx]
        return torch.stack([self.lazy[int(i)] for i in idx])


def dsprites_source(cfg):
    """classes [N, 5] -> images, procedural or from the published file given as --data-path (read once per
    process: training and evaluation share it)."""
    from train.dsprites import open_file, render_dsprites

    if cfg.data_path:
        if not Path(cfg.data_path).is_file():
            raise DataError(f"dSprites file {cfg.data_path} not found (a dsprites_ndarray_*.npz, or no --data-path "
                            "for the procedural generator)")
        f = open_file(str(Path(cfg.data_path).resolve()))
        return lambda c: f.render(c, cfg.image_size)
    return lambda c: render_dsprites(c, cfg.image_size)


def eval_set(cfg, n: int, seed_offset: int = 1_000_003):
    """Held-out images and factors (None when the data set has none) for evaluation."""
    if cfg.dataset == "disks":
        return make_disks(n, cfg.data_seed + seed_offset, **disk_options(cfg))
    if cfg.dataset == "dsprites":
        c = sample_classes(n, torch.Generator().manual_seed(cfg.data_seed + seed_offset))
        return dsprites_source(cfg)(c), torch.from_numpy(c.astype(np.float64))
    if cfg.dataset == "fashion-mnist":
        x, _ = load_fashion_mnist(cfg.data_path, "test", cfg.image_size)
        return x[:n], None
    ds = CelebA(cfg.data_path, cfg.image_spec(), "test") if cfg.dataset == "celeba" else ImageFolder(
        cfg.data_path, cfg.image_spec())
    n = min(n, len(ds))
    x = torch.stack([ds[i] for i in range(n)])
    return x, (ds.factors[:n] if ds.factors is not None else None)
