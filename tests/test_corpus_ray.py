"""`sami-rt encode-corpus --ray` (issue 20) on a local Ray instance (2 CPUs, no dashboard): the same outputs,
byte for byte, and the same rows as the local run; bad inputs and an input that kills its Ray worker are failed
rows; a rerun through the command skips what is complete without starting any Ray work."""

import os
from pathlib import Path

import pytest

ray = pytest.importorskip("ray", reason='the [ray] extra (pip install "sami-rt[ray]")')

from sami_rt.corpus import INDEX, make_items, model_id, read_index, run_corpus  # noqa: E402

from test_corpus import _video, corpus, crashing_work, invoke, outputs  # noqa: E402

TESTS = str(Path(__file__).resolve().parent)


@pytest.fixture(scope="module")
def local_ray():
    """One Ray instance for the module; its workers import this folder's modules (crashing_work)."""
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False,
             runtime_env={"env_vars": {"PYTHONPATH": os.pathsep.join([TESTS, os.environ.get("PYTHONPATH", "")])}})
    yield ray
    ray.shutdown()


def strip(rows):
    return [{k: v for k, v in r.items() if k != "seconds"} for r in rows]


def test_ray_gives_the_local_bytes_and_rows_and_isolates_a_crashing_input(local_ray, tmp_path, fresh_seed):
    from sami_rt.corpus_ray import DIED

    good, bad = corpus(tmp_path / "in", fresh_seed, n_videos=3)  # v0, v1, frames, v2; cut.avi, notes, missing
    crash = _video(tmp_path / "in" / "crash.mp4", 5, fresh_seed + 99)
    items = make_items([str(p) for p in good + bad + [crash]], model=model_id())
    local = run_corpus(items[:-1], tmp_path / "local", workers=1, device="cpu")
    seen = []
    on_ray = run_corpus(items, tmp_path / "ray", workers=2, device="cpu", ray=True, work=crashing_work,
                        progress=lambda k, n, row: seen.append((k, n)))
    assert strip(on_ray[:-1]) == strip(local)
    assert [r["status"] for r in on_ray] == ["ok"] * 4 + ["failed"] * 4
    assert on_ray[-1]["error"] == DIED and on_ray[-1]["output"] is None
    assert outputs(tmp_path / "ray") == outputs(tmp_path / "local") and len(outputs(tmp_path / "local")) == 4
    assert seen == [(k, len(items)) for k in range(1, len(items) + 1)]
    assert strip(read_index(tmp_path / "ray" / INDEX)) == strip(on_ray)

    # the command on the same outputs, good inputs only: every one complete, so Ray has nothing to run
    r = invoke("encode-corpus", *good, "-o", tmp_path / "ray", "--ray", "--device", "cpu")
    assert r.exit_code == 0, r.stderr
    assert "4 inputs: 0 encoded (0 frames" in r.stderr and "4 skipped (complete)" in r.stderr
    assert outputs(tmp_path / "ray") == outputs(tmp_path / "local")
