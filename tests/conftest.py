import os
import random

import numpy as np

import pytest

# one thread per xdist worker (the README runs one worker per CPU), two in a plain run
os.environ.setdefault("OMP_NUM_THREADS", "1" if os.environ.get("PYTEST_XDIST_WORKER") else "2")


TINY = dict(image_size=16, disk_radius=3.0, T=50, unet_channels=8, unet_mult=(1, 2), enc_channels=(8, 8),
            enc_hidden=16, batch=8, steps=6, warmup=2, log_every=2, ckpt_every=3, sample_every=0,
            eval_at_end=False, eval_n=64, n_train=64)


def tiny_config(**kw):
    """A disks model small enough to train a few steps in a second on 2 CPU cores."""
    from train.config import get_config

    return get_config("disks").replace(**{**TINY, **kw})


def tiny_cli_args(**kw) -> list[str]:
    """``train/run.py --config disks`` arguments giving ``tiny_config(**kw)``."""
    args = ["--config", "disks"]
    for k, v in {**TINY, **kw}.items():
        args += [f"--{k.replace('_', '-')}", ",".join(map(str, v)) if isinstance(v, tuple) else str(v)]
    return args


@pytest.fixture(autouse=True)
def fresh_seed():
    """Fresh random inputs in every test; the seed is printed so that a failure can be replayed.

    Tests derive every generator from it: ``np.random.default_rng(fresh_seed)``, or
    ``np.random.default_rng([fresh_seed, k])`` for independent streams, ``torch.Generator().manual_seed(...)``;
    torch's, numpy's and Python's global generators are seeded with it too. (Hypothesis draws its own.)
    To replay a failure: ``SAMI_TEST_SEED=<the printed seed> pytest tests/FILE.py::TEST``."""
    seed = int(os.environ.get("SAMI_TEST_SEED") or int.from_bytes(os.urandom(4), "little"))
    print(f"random seed: {seed}")
    random.seed(seed)
    np.random.seed(seed)
    try:
        import torch

        torch.manual_seed(seed)
    except ImportError:
        pass
    yield seed


@pytest.fixture(scope="module")
def rt():
    """The runtime on the bundle shipped in the package (CPU), one per test module."""
    from sami_rt.runtime import Runtime

    return Runtime(device="cpu")


@pytest.fixture
def tiny_cfg():
    return tiny_config()


# The longest files first (their module fixtures and subprocess runs), so that the test workers, which take
# whole files in collection order (--dist loadfile), do not start the longest one last.
LONGEST_FIRST = ("test_export.py", "test_training.py", "test_natural.py", "test_frozen.py")


def pytest_collection_modifyitems(config, items):
    rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # stable: the rest keep their order
    try:
        import torch

        has_cuda = torch.cuda.is_available()
    except ImportError:
        has_cuda = False
    skip = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "gpu" in item.keywords and not has_cuda:
            item.add_marker(skip)

