"""`python train/run.py` in front of data it cannot use (issue 18): one line on stderr and exit code 1, never a
traceback, whether the data is missing at the start or an image fails to read during training; an image
folder's size is said."""

import subprocess
import sys

import numpy as np
import pytest

from helpers import ROOT, cli_env

TINY = ["--image-size", "16", "--unet-channels", "8", "--unet-mult", "1,2", "--enc-channels", "8,8",
        "--enc-hidden", "16", "--batch", "4", "--steps", "3", "--log-every", "1", "--ckpt-every", "0",
        "--sample-every", "0", "--no-eval", "--threads", "1"]


def train(*args, cwd):
    return subprocess.run([sys.executable, str(ROOT / "train" / "run.py"), *map(str, args)], capture_output=True,
                          text=True, cwd=cwd, timeout=600, env=cli_env())


def test_missing_data_is_one_line_and_exit_1(tmp_path, fresh_seed):
    rng = np.random.default_rng(fresh_seed)
    missing = tmp_path / f"nowhere{rng.integers(10**6)}"
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "notes.txt").write_bytes(rng.bytes(16))
    for args, says in ((["--config", "fashion-mnist", "--data-path", missing], f"not found in {missing}"),
                       (["--config", "disks", "--dataset", "folder", "--data-path", missing],
                        f"image folder {missing} does not exist"),
                       (["--config", "disks", "--dataset", "folder", "--data-path", empty],
                        f"no images (.png, .jpg, .jpeg, .bmp, .webp, .tif, .tiff, .pgm, .ppm) found under {empty}")):
        r = train(*args, cwd=tmp_path)
        assert r.returncode == 1 and r.stdout == "", r.stderr
        assert r.stderr.count("\n") == 1 and r.stderr.startswith("error: ") and says in r.stderr, r.stderr
    assert not (tmp_path / "runs").exists()


def test_a_folder_is_counted_and_an_unreadable_image_stops_training_in_one_line(tmp_path, fresh_seed):
    """Every image truncated: the folder is found (and counted), the first batch fails to read."""
    import cv2

    rng = np.random.default_rng(fresh_seed)
    d = tmp_path / "imgs"
    (d / "sub").mkdir(parents=True)
    n = int(rng.integers(2, 7))
    for i in range(n):
        ok, buf = cv2.imencode(".png", rng.integers(0, 256, (20, 24), dtype=np.uint8))
        data = buf.tobytes()
        (d / ("sub" if i % 2 else ".") / f"{i}.png").write_bytes(data[: int(rng.integers(30, len(data) - 12))])
    r = train("--config", "disks", "--dataset", "folder", "--data-path", d, "--out", tmp_path / "run", *TINY,
              cwd=tmp_path)
    assert r.returncode == 1 and "Traceback" not in r.stderr, r.stderr[-3000:]
    lines = r.stderr.splitlines()
    assert f"data: {n} images found under {d}" in lines
    assert lines[-1].startswith("error: cannot read image: ") and "is a truncated PNG" in lines[-1]


def test_help_lists_every_option_the_readme_uses(capsys):
    """Each --option the README writes after train/run.py, train/evaluate.py or export/run.py (its command
    lines, continuation lines joined, and its prose) appears in that script's --help."""
    import re

    from export.run import main as export_main
    from train.evaluate import main as evaluate_main
    from train.run import main as run_main

    readme = (ROOT / "README.md").read_text().replace("\\\n", " ")
    helps = {}
    for script, fn in (("train/run.py", run_main), ("train/evaluate.py", evaluate_main), ("export/run.py", export_main)):
        with pytest.raises(SystemExit):
            fn(["--help"])
        helps[script] = capsys.readouterr().out
    used = {s: set() for s in helps}
    for script in helps:
        for m in re.finditer(re.escape(script) + r"([^`|#\n]*)", readme):
            used[script] |= set(re.findall(r"(?<![\w-])--[a-z][a-z0-9-]*", m.group(1)))
    assert all(used.values()), used  # the README uses each script with options
    for script, opts in used.items():
        missing = sorted(o for o in opts if not re.search(re.escape(o) + r"(?![a-z0-9-])", helps[script]))
        assert not missing, (script, missing)
