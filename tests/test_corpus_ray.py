"""`sami-rt encode-corpus --ray` (issue 20) on a local Ray instance (2 CPUs, no dashboard): the same outputs,
byte for byte, and the same rows as the local run; bad inputs and an input that kills its Ray worker are failed
rows (so is one whose work function raises); relative paths mean the same to the actors; a rerun
through the command skips what is complete without starting any Ray work."""

import os
import threading
from pathlib import Path

import pytest

ray = pytest.importorskip("ray", reason='the [ray] extra (pip install "sami-rt[ray]")')

from sami_rt.scale.corpus import INDEX, make_items, model_id, read_index, run_corpus  # noqa: E402

from test_corpus import _video, corpus, crashing_work, invoke, outputs  # noqa: E402


def failing_work(runtime, item, out_dir):
    """crashing_work, and a plain exception on 'raise' inputs (a bug in a work function, not a crash)."""
    if "raise" in Path(item.path).name:
        raise ValueError(f"no work for {item.path}")
    return crashing_work(runtime, item, out_dir)

TESTS = str(Path(__file__).resolve().parent)


@pytest.fixture(scope="module")
def local_ray():
    """One Ray instance for the module; its workers import this folder's modules (crashing_work)."""
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False,
             object_store_memory=200 * 2**20,
             runtime_env={"env_vars": {"PYTHONPATH": os.pathsep.join([TESTS, os.environ.get("PYTHONPATH", "")])}})
    yield ray
    ray.shutdown()


def strip(rows):
    return [{k: v for k, v in r.items() if k != "seconds"} for r in rows]


def within(seconds, fn, *args, **kw):
    """fn's result, or a failed test when Ray has not finished it within ``seconds`` (never a hung CI)."""
    out = []
    t = threading.Thread(target=lambda: out.append(fn(*args, **kw)), daemon=True)
    t.start()
    t.join(seconds)
    assert out, f"no result within {seconds} s"
    return out[0]


def test_ray_gives_the_local_bytes_and_rows_and_isolates_a_crashing_input(local_ray, tmp_path, fresh_seed,
                                                                          monkeypatch):
    from sami_rt.scale.pool import DIED

    good, bad = corpus(tmp_path / "in", fresh_seed, n_videos=3)  # v0, v1, frames, v2; cut.avi, notes, missing
    crash = _video(tmp_path / "in" / "crash.mp4", 5, fresh_seed + 99)
    raises = _video(tmp_path / "in" / "raise.mp4", 5, fresh_seed + 98)
    monkeypatch.chdir(tmp_path)  # relative inputs and outputs: the actors must read them as this process does
    items = make_items([os.path.relpath(p, tmp_path) for p in good + bad + [raises, crash]], model=model_id())
    local = run_corpus(items[:-2], "local", workers=1, device="cpu")
    seen = []
    on_ray = within(600, run_corpus, items, "ray", workers=2, device="auto", ray=True, work=failing_work,
                    progress=lambda k, n, row: seen.append((k, n)))
    assert strip(on_ray[:-2]) == strip(local)
    assert [r["status"] for r in on_ray] == ["ok"] * 4 + ["failed"] * 5
    assert on_ray[-2]["error"] == "ValueError: no work for in/raise.mp4"  # the pool's words for it
    assert on_ray[-1]["error"] == DIED and on_ray[-1]["output"] is None
    assert outputs(tmp_path / "ray") == outputs(tmp_path / "local") and len(outputs(tmp_path / "local")) == 4
    assert seen == [(k, len(items)) for k in range(1, len(items) + 1)]
    assert strip(read_index(tmp_path / "ray" / INDEX)) == strip(on_ray)

    # the command on the same outputs, good inputs only: every one complete, so Ray has nothing to run
    r = invoke("encode-corpus", *(it.path for it in items[:4]), "-o", "ray", "--ray", "--device", "cpu")
    assert r.exit_code == 0, r.stderr
    assert "4 inputs: 0 encoded (0 frames" in r.stderr and "4 skipped (complete)" in r.stderr
    assert outputs(tmp_path / "ray") == outputs(tmp_path / "local")


def test_ray_core_lines_are_kept_off_the_terminal_and_nothing_else_is(tmp_path, fresh_seed):
    """sami_rt.scale.ray_util.quiet_ray_core, in a process of its own: the lines Ray's C++ core and its processes write
    to file descriptor 2 (the two the commands printed: a Ray Data notice and a Serve shutdown line) are
    dropped; the process's own lines, a child's, a fatal line and Ray's lines outside the block pass."""
    import subprocess
    import sys

    import numpy as np

    mine = f"a line of ours {np.random.default_rng(fresh_seed).integers(10**9)}"
    core = "[2026-12-04 02:52:35,571 E 15317 15317] core_worker.cc:2465: Actor with class name: 'MapWorker' ..."
    fatal = "[2026-12-04 02:52:35,571 F 1 1] fatal.cc:1: Ray fatal line"
    script = tmp_path / "child.py"
    script.write_text(
        "import os, subprocess, sys\n"
        "from sami_rt.scale.ray_util import quiet_ray_core\n"
        "with quiet_ray_core():\n"
        f"    os.write(2, {core!r}.encode() + b'\\n')\n"
        f"    print({mine!r}, file=sys.stderr, flush=True)\n"
        "    os.write(2, b'\\x1b[33m(raylet)\\x1b[0m Task ServeController.graceful_shutdown failed. Retried\\n')\n"
        "    subprocess.run([sys.executable, '-c', 'import sys; sys.stderr.write(\"child line\\\\n\")'], check=True)\n"
        f"    os.write(2, {fatal!r}.encode() + b'\\n')\n"
        f"os.write(2, b'after: ' + {core!r}.encode() + b'\\n')\n")
    out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stderr.splitlines() == [mine, "child line", fatal, "after: " + core], out.stderr
