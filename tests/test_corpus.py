"""`sami-rt encode-corpus` (issue 20, local mode): per-input outputs equal to Runtime.encode_video, failed rows
for bad inputs, resume, a kill half-way, the process pool against this process, list files, output names."""

import importlib.util
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from sami_rt.cli.main import main
from sami_rt.scale.corpus import (FORMAT, INDEX, complete_row, expand_inputs, make_items, model_id, output_name,
                            process_item, read_index, run_corpus)
from sami_rt.media.images import load_cv2
from sami_rt.runtime import Runtime
from sami_rt.video.trajectory import angles
from sami_rt.media.images import write_video

from helpers import cli_env

cv2 = load_cv2()


@pytest.fixture(scope="module")
def rt1():
    """The runtime the corpus itself opens in this process: CPU, one backend thread."""
    return Runtime(device="cpu", threads=1)


def _video(path: Path, frames: int, seed: int, fourcc: str = "mp4v") -> Path:
    """A 32x32 grey video of a disk moving on a random straight line (the shipped model's size)."""
    rng = np.random.default_rng(seed)
    (x, y), (dx, dy) = rng.uniform(8, 24, 2), rng.uniform(-1.5, 1.5, 2)
    write_video(path, (cv2.circle(np.zeros((32, 32), np.uint8), (int(x + k * dx) % 32, int(y + k * dy) % 32), 5, 255, -1)
                       for k in range(frames)), fourcc=fourcc)
    return path


def _folder(path: Path, frames: int, seed: int) -> Path:
    path.mkdir()
    x0 = np.random.default_rng(seed).integers(6, 12)
    for k in range(frames):
        f = np.zeros((32, 32), np.uint8)
        cv2.circle(f, (int(x0 + 3 * k), 16), 5, 255, -1)
        cv2.imwrite(str(path / f"{k:02d}.png"), f)
    return path


def _truncated(path: Path, seed: int) -> Path:
    """An MJPEG AVI cut at 60%: the container still declares all 40 frames, decoding stops at the cut."""
    full = _video(path.with_name("full_" + path.name), 40, seed, "MJPG")
    data = full.read_bytes()
    full.unlink()
    path.write_bytes(data[: len(data) * 3 // 5])
    return path


def corpus(root: Path, seed: int, n_videos: int = 5):
    """Good inputs (videos and one image folder) and bad ones (a truncated video, a text file, a missing path)."""
    root.mkdir(exist_ok=True)
    good = [_video(root / f"v{i}.mp4", 6 + i % 3, seed + i) for i in range(n_videos)]
    good.insert(2, _folder(root / "frames", 5, seed))
    (root / "notes.mp4").write_text("not a video at all")
    bad = [_truncated(root / "cut.avi", seed), root / "notes.mp4", root / "missing.mp4"]
    return good, bad


def npz(path: Path) -> dict:
    with np.load(path) as z:
        return {k: z[k] for k in z.files}


def outputs(out: Path) -> dict:
    return {p.name: p.read_bytes() for p in sorted(out.glob("*.npz"))}


def invoke(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


# ------------------------------------------------------------------------------------------------ tests
def test_a_corpus_gives_encode_videos_arrays_and_a_failed_row_per_bad_input(rt1, tmp_path, fresh_seed):
    good, bad = corpus(tmp_path / "in", fresh_seed)
    inputs = good[:3] + [bad[0]] + good[3:] + bad[1:]
    r = invoke("encode-corpus", *inputs, "-o", tmp_path / "out", "--workers", 1, "--device", "cpu")
    assert r.exit_code == 1, r.stderr
    rows = read_index(tmp_path / "out" / INDEX)
    assert [row["path"] for row in rows] == [os.path.normpath(str(p)) for p in inputs]  # input order
    assert {row["path"]: row["status"] for row in rows if row["status"] != "ok"} == {str(p): "failed" for p in bad}
    errors = {Path(row["path"]).name: row["error"] for row in rows if row["status"] == "failed"}
    assert "truncated" in errors["cut.avi"] and "not a video" in errors["notes.mp4"]
    assert "does not exist" in errors["missing.mp4"]
    assert all(e.count("\n") == 0 for e in errors.values())
    lines = r.stderr.strip().splitlines()
    assert sum(line.startswith("[") for line in lines) == len(inputs)
    assert "3 failed" in lines[-1] and str(tmp_path / "out" / INDEX) in lines[-1]
    assert len(list((tmp_path / "out").glob("*.npz"))) == len(good)
    for row in rows:
        if row["status"] != "ok":
            assert row["output"] is None
            continue
        got = npz(tmp_path / "out" / row["output"])
        assert str(got["format"]) == FORMAT and str(got["input"]) == os.path.abspath(row["path"])
        if row["kind"] == "images":
            mu, var = rt1.encode(row["path"])
            x = rt1.load_images(row["path"])
            want = dict(mu=mu, var=var, latent_curvature=angles(mu), pixel_curvature=angles(x))
        else:
            v = rt1.encode_video(row["path"])
            want = dict(frames=v.frames, mu=v.mu, var=v.var, latent_curvature=v.latent_curvature,
                        pixel_curvature=v.pixel_curvature, luma=v.luma)
            assert row["latent_curvature"] == pytest.approx(v.mean_latent_curvature, abs=1e-5)
        for k, a in want.items():
            np.testing.assert_array_equal(got[k], a, err_msg=k)  # bit for bit
        assert row["frames"] == len(got["mu"])


def test_a_rerun_redoes_only_missing_damaged_and_changed_outputs(rt1, tmp_path, fresh_seed):
    good, bad = corpus(tmp_path / "in", fresh_seed)
    items = make_items(expand_inputs([str(p) for p in good + bad])[0], model=model_id())
    out = tmp_path / "out"
    first = run_corpus(items, out, runtime=rt1)
    assert [r["status"] for r in first] == ["ok"] * len(good) + ["failed"] * len(bad)
    names = [it.output for it in items[: len(good)]]
    before = {n: ((out / n).read_bytes(), os.stat(out / n).st_mtime_ns) for n in names}
    (out / names[0]).unlink()  # deleted
    data = (out / names[3]).read_bytes()
    (out / names[3]).write_bytes(data[: len(data) // 2])  # truncated
    st = os.stat(good[4])
    os.utime(good[4], ns=(st.st_atime_ns, st.st_mtime_ns + 5_000_000_000))  # touched
    again = run_corpus(items, out, runtime=rt1)
    status = [r["status"] for r in again]
    assert status[: len(good)] == ["ok", "skipped", "skipped", "ok", "ok", "skipped"]
    assert status[len(good):] == ["failed"] * len(bad)
    for i in (1, 2, 5):  # untouched: not rewritten
        assert before[names[i]] == ((out / names[i]).read_bytes(), os.stat(out / names[i]).st_mtime_ns)
    for i in (0, 3):  # the same input again: the same bytes
        assert (out / names[i]).read_bytes() == before[names[i]][0]
    assert [r["frames"] for r in again] == [r["frames"] for r in first]
    assert read_index(out / INDEX) == again
    third = run_corpus(items, out, runtime=rt1)
    assert [r["status"] for r in third] == ["skipped"] * len(good) + ["failed"] * len(bad)
    other = make_items([it.path for it in items], every=2, model=items[0].model_id)  # other options: redone
    assert complete_row(out, other[1]) is None and complete_row(out, items[1])["status"] == "skipped"


def test_an_interrupted_run_leaves_complete_outputs_and_a_valid_index(rt1, tmp_path, fresh_seed):
    good, _ = corpus(tmp_path / "in", fresh_seed)
    items = make_items([str(p) for p in good], model=model_id())
    out, calls = tmp_path / "out", []

    def stops_after_three(runtime, item, out_dir):
        if len(calls) == 3:
            raise KeyboardInterrupt
        calls.append(item.path)
        return process_item(runtime, item, out_dir)

    with pytest.raises(KeyboardInterrupt):
        run_corpus(items, out, runtime=rt1, work=stops_after_three)
    assert sorted(p.name for p in out.iterdir()) == sorted([INDEX] + [it.output for it in items[:3]])
    assert [r["path"] for r in read_index(out / INDEX)] == calls
    rows = run_corpus(items, out, runtime=rt1)
    assert [r["status"] for r in rows] == ["skipped"] * 3 + ["ok"] * (len(items) - 3)


def test_a_killed_cli_run_leaves_no_partial_output_and_the_rerun_finishes(rt1, tmp_path, fresh_seed):
    """SIGKILL once the first output appears: every file under a final name is complete, the index is valid
    JSON Lines, and the rerun skips what was written."""
    root = tmp_path / "in"
    root.mkdir()
    vids = [_video(root / f"v{i:02d}.mp4", 40, fresh_seed + i) for i in range(16)]
    (root / "list.txt").write_text("\n".join(p.name for p in vids) + "\n")
    out = tmp_path / "out"
    proc = subprocess.Popen([sys.executable, "-m", "sami_rt.cli.main", "encode-corpus", str(root / "list.txt"), "-o",
                             str(out), "--workers", "1", "--device", "cpu"], env=cli_env(),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    while not list(out.glob("*.npz")) and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.002)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    items = make_items(expand_inputs([root / "list.txt"])[0], model=model_id())
    written = {p.name for p in out.glob("*.npz")}
    assert written and all(complete_row(out, it) for it in items if it.output in written)
    rows = read_index(out / INDEX) if (out / INDEX).exists() else []
    assert all(r["status"] == "ok" and r["output"] in written for r in rows)
    again = run_corpus(items, out, runtime=rt1)
    assert [r["status"] == "skipped" for r in again] == [it.output in written for it in items]
    assert all(r["status"] in ("ok", "skipped") for r in again)


def test_a_pool_of_two_writes_the_same_bytes_as_one_process(tmp_path, fresh_seed):
    vids = [str(_video(tmp_path / f"v{i}.mp4", 5 + i, fresh_seed + i)) for i in range(3)]
    items = make_items(vids, model=model_id())
    one = run_corpus(items, tmp_path / "one", workers=1, device="cpu")
    two = run_corpus(items, tmp_path / "two", workers=2, device="cpu")
    assert [r["status"] for r in two] == ["ok"] * 3
    strip = [{k: v for k, v in r.items() if k != "seconds"} for r in one]
    assert [{k: v for k, v in r.items() if k != "seconds"} for r in two] == strip
    assert outputs(tmp_path / "one") == outputs(tmp_path / "two") and len(outputs(tmp_path / "two")) == 3


def test_list_files_and_output_names(rt1, tmp_path, fresh_seed, monkeypatch):
    good, bad = corpus(tmp_path / "in", fresh_seed, n_videos=3)  # v0, v1, frames, v2
    lst = tmp_path / "lists" / "corpus.txt"
    lst.parent.mkdir()
    lst.write_text(f"# the corpus\n\n../in/v0.mp4\n  ../in/frames  \n# ../in/v1.mp4\n{good[-1]}\n../in/v0.mp4\n"
                   "../in/missing.mp4\n")
    monkeypatch.chdir(tmp_path / "in")
    paths, dropped = expand_inputs([lst, "v1.mp4"])
    want = [str(tmp_path / "lists" / "../in/v0.mp4"), str(tmp_path / "lists" / "../in/frames"), str(good[-1]),
            str(tmp_path / "lists" / "../in/missing.mp4"), "v1.mp4"]
    assert paths == [os.path.normpath(p) for p in want] and dropped == 1
    r = invoke("encode-corpus", lst, "v1.mp4", "-o", tmp_path / "out", "--device", "cpu", "--workers", 1)
    assert r.exit_code == 1 and "1 repeated path(s) taken once" in r.stderr
    assert [row["status"] for row in read_index(tmp_path / "out" / INDEX)] == ["ok", "ok", "ok", "failed", "ok"]
    names = {output_name(p) for p in ["a/b.mp4", "a__b.mp4", "/x/a/b.mp4", "../a/b.mp4", "a/b.mp4/"]}
    assert len(names) == 4 and output_name("a/b.mp4") == output_name("a/b.mp4/")  # the same file: one name
    assert output_name("a/b.mp4").startswith("a__b.mp4-") and not output_name(".hidden.mp4").startswith(".")
    assert len(output_name("d/" * 200 + "v.mp4")) < 100 and output_name("ü v.mp4").startswith("__v.mp4-")


def test_bad_output_dirs_and_ray_options_are_one_line_before_any_work(tmp_path, monkeypatch):
    import sami_rt.scale.corpus

    def no_model(*a, **k):
        raise AssertionError("the model was opened")

    monkeypatch.setattr(sami_rt.scale.corpus, "model_id", no_model)
    (tmp_path / "file").write_text("x")
    video = str(tmp_path / "v.mp4")
    for out, fragment in ((tmp_path / "file", "is a file"), (tmp_path / "file" / "sub", "is a file, not a directory")):
        r = invoke("encode-corpus", video, "-o", out)
        assert r.exit_code == 1 and r.stderr.count("\n") == 1 and fragment in r.stderr, r.stderr
    r = invoke("encode-corpus", video, "-o", tmp_path / "out", "--address", "ray://head:10001")
    assert r.exit_code == 1 and r.stderr.count("\n") == 1 and "add --ray" in r.stderr, r.stderr
    if importlib.util.find_spec("ray") is not None:
        with socket.socket() as sk:  # a port nothing listens on
            sk.bind(("127.0.0.1", 0))
            port = sk.getsockname()[1]
        r = invoke("encode-corpus", video, "-o", tmp_path / "out", "--ray", "--address", f"127.0.0.1:{port}")
        assert r.exit_code == 1 and r.stderr.count("\n") == 1 and "no Ray cluster answers at" in r.stderr, r.stderr
    monkeypatch.setitem(sys.modules, "ray", None)  # as if the [ray] extra were not installed
    r = invoke("encode-corpus", video, "-o", tmp_path / "out", "--ray")
    assert r.exit_code == 1 and r.stderr.count("\n") == 1 and 'pip install "sami-rt[ray]"' in r.stderr, r.stderr
    r = invoke("encode-corpus", tmp_path / "none.txt", "-o", tmp_path / "out")
    assert r.exit_code == 1 and "list file" in r.stderr and "does not exist" in r.stderr
    assert not (tmp_path / "out").exists()


def crashing_work(runtime, item, out_dir):
    """The pool test's per-item function: kills its process on 'crash' inputs (a decoder's segfault)."""
    if "crash" in Path(item.path).name:
        os._exit(3)
    return process_item(runtime, item, out_dir)


def test_an_input_that_kills_its_worker_is_a_failed_row(tmp_path, fresh_seed):
    from sami_rt.scale.pool import DIED

    vids = [str(_video(tmp_path / name, 5, fresh_seed + i)) for i, name in enumerate(["crash.mp4", "v.mp4"])]
    rows = run_corpus(make_items(vids, model=model_id()), tmp_path / "out", workers=2, device="cpu",
                      work=crashing_work)
    assert [(r["status"], r["error"]) for r in rows] == [("failed", DIED), ("ok", None)]


def test_a_folder_of_videos_is_its_videos(tmp_path, fresh_seed):
    """encode-corpus FOLDER on a folder of videos (no images) encodes each video; a folder of images stays one
    trajectory; `encode FOLDER` on the videos' folder says it holds videos and what to run."""
    vids = tmp_path / "clips"
    vids.mkdir()
    for i, name in enumerate(("b.mp4", "a.avi", "c.mkv")):
        _video(vids / name, 4 + i, fresh_seed + i, "MJPG" if name != "b.mp4" else "mp4v")
    (vids / "readme.txt").write_text("not an input")
    frames = _folder(tmp_path / "frames", 3, fresh_seed)
    paths, dropped = expand_inputs([str(vids), str(frames), str(vids / "a.avi")])
    assert paths == [str(vids / n) for n in ("a.avi", "b.mp4", "c.mkv")] + [str(frames)] and dropped == 1
    r = invoke("encode-corpus", vids, "-o", tmp_path / "codes")
    assert r.exit_code == 0, r.output
    rows = [json.loads(ln) for ln in (tmp_path / "codes" / INDEX).read_text().splitlines()]
    assert sorted(Path(row["path"]).name for row in rows) == ["a.avi", "b.mp4", "c.mkv"]
    assert all(row["status"] == "ok" for row in rows)
    r = invoke("encode", vids)
    assert r.exit_code == 1 and "holds 3 videos: encode one with sami-rt encode" in r.output
    assert f"sami-rt encode-corpus {vids} -o OUT" in r.output
