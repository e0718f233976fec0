"""The training loop: exact resume, several processes, configuration overrides, evaluation end to end."""

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from tests.conftest import tiny_config
from train.config import Config, apply_overrides, get_config
from train.loop import CHECKPOINT, Trainer, load_checkpoint

ROOT = Path(__file__).resolve().parent.parent
TINY_ARGS = ["--image-size", "16", "--disk-radius", "3", "--T", "50", "--unet-channels", "8", "--unet-mult", "1,2",
             "--enc-channels", "8,8", "--enc-hidden", "16", "--batch", "8", "--warmup", "2", "--log-every", "2",
             "--ckpt-every", "3", "--sample-every", "0", "--eval-n", "64", "--n-train", "64"]


def _states_equal(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_resume_gives_the_same_state_as_an_uninterrupted_run(tmp_path, fresh_seed):
    seed = fresh_seed % 1000
    cfg = tiny_config(steps=6, seed=seed, n_train=0)  # fresh disks each draw: the data RNG must resume too
    Trainer(cfg, tmp_path / "full").run()
    Trainer(cfg, tmp_path / "part").run(until=4)  # interrupted after step 4 (checkpoint at 3 and 4)
    # drop the last checkpoint and metrics: as if killed after the checkpoint at step 3
    Trainer(cfg, tmp_path / "part3").run(until=3)
    (tmp_path / "part" / CHECKPOINT).write_bytes((tmp_path / "part3" / CHECKPOINT).read_bytes())
    Trainer(cfg, tmp_path / "part", resume=True).run()
    full = load_checkpoint(tmp_path / "full" / CHECKPOINT)
    part = load_checkpoint(tmp_path / "part" / CHECKPOINT)
    assert full["step"] == part["step"] == 6
    assert _states_equal(full["model"], part["model"])
    assert _states_equal(full["ema"], part["ema"])
    assert torch.equal(full["rng"][0]["gen"], part["rng"][0]["gen"])
    steps = [json.loads(ln)["step"] for ln in (tmp_path / "part" / "metrics.jsonl").read_text().splitlines()]
    assert steps == [2, 4, 6]  # the log continues where the checkpoint was, without duplicates
    # and the run differs from one with another seed: the comparison above can fail
    Trainer(cfg.replace(seed=seed + 1), tmp_path / "other").run()
    other = load_checkpoint(tmp_path / "other" / CHECKPOINT)
    assert not _states_equal(full["model"], other["model"])


def test_checkpoint_loads_with_weights_only_and_holds_what_export_needs(tmp_path):
    Trainer(tiny_config(steps=2), tmp_path).run()
    ck = torch.load(tmp_path / CHECKPOINT, weights_only=True)
    assert {"model", "ema", "config", "abar", "step", "opt", "rng"} <= set(ck)
    assert ck["abar"].dtype == torch.float64 and len(ck["abar"]) == 50
    assert Config.from_dict(ck["config"]) == tiny_config(steps=2)
    assert not list(tmp_path.glob(".*.tmp"))  # no temporary files left behind


def test_two_process_torchrun_completes_with_identical_weights(tmp_path):
    out = tmp_path / "ddp"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           str(ROOT / "train" / "run.py"), "--config", "disks", "--out", str(out), "--steps", "4", "--threads", "1", "--eval-n", "32",
           "--eval-steps", "5",
           *TINY_ARGS]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env, cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    ranks = json.loads((out / "ranks.json").read_text())
    assert ranks["world"] == 2 and len(set(ranks["weights_sha256"])) == 1
    assert load_checkpoint(out / CHECKPOINT)["step"] == 4
    assert len(load_checkpoint(out / CHECKPOINT)["rng"]) == 2


def test_cli_overrides_and_their_errors(tmp_path, capsys):
    cfg = apply_overrides(get_config("disks"), ["--kl-weight", "1e-2", "--unet-mult=1,2", "--enc-bias", "true"])
    assert cfg.kl_weight == 1e-2 and cfg.unet_mult == (1, 2) and cfg.enc_bias is True
    with pytest.raises(ValueError, match="unknown configuration key --nope"):
        apply_overrides(cfg, ["--nope", "1"])
    with pytest.raises(ValueError, match="--steps expects a int, got 'many'"):
        apply_overrides(cfg, ["--steps", "many"])
    from train.run import main

    with pytest.raises(SystemExit) as e:
        main(["--config", "disks", "--eval-protocol", "slow"])
    assert e.value.code == 2 and "--eval-protocol expects quick or full, got 'slow'" in capsys.readouterr().err
    for args, msg in ((["--aux-contrast-input", "median"], "--aux-contrast-input expects one of mean, sample"),
                      (["--aux-contrast", "-1"], "--aux-contrast must be 0 (off) or positive")):
        with pytest.raises(SystemExit) as e:
            main(["--config", "fashion-mnist", *args])
        assert e.value.code == 2 and msg in capsys.readouterr().err
    r = subprocess.run([sys.executable, str(ROOT / "train" / "run.py"), "--config", "disks", "--lr", "fast"],
                       capture_output=True, text=True)
    assert r.returncode == 2 and "--lr expects a float, got 'fast'" in r.stderr
    r = subprocess.run([sys.executable, str(ROOT / "train" / "run.py"), "--config", "disks-small", "--print-config"],
                       capture_output=True, text=True)
    assert r.returncode == 0 and json.loads(r.stdout) == json.loads(get_config("disks-small").to_json())


def test_every_preset_builds_and_round_trips_through_json():
    from train.config import PRESETS

    for name, cfg in PRESETS.items():
        assert Config.from_dict(json.loads(cfg.to_json())) == cfg, name


def test_train_and_evaluate_end_to_end(tmp_path):
    run = tmp_path / "run"
    r = subprocess.run([sys.executable, str(ROOT / "train" / "run.py"), "--config", "disks", "--out", str(run),
                        *TINY_ARGS, "--steps", "4", "--sample-every", "4", "--eval-n", "100", "--eval-steps", "10",
                        "--sampling-scale", "2"],
                       capture_output=True, text=True,
                       timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    for f in ("config.json", "metrics.jsonl", CHECKPOINT, "eval.json", "posterior_variance.csv",
              "posterior_variance.png", "samples/step_0000004.png"):
        assert (run / f).is_file(), f
    ev = json.loads((run / "eval.json").read_text())
    assert set(ev["factors"]["knn_r2"]) == {"x", "y", "background"}
    for k in ("mig", "modularity", "sap"):
        assert 0 <= ev["factors"][k] <= 1
    g = ev["generation"]
    assert g["test_variability"] > 0 and g["cond_variability"] > 0 and g["uncond_mse_to_guide"] > 0
    # figures at the run's sampling scale, and at 1 (the exact model) beside them
    assert g["scale"] == 2.0 and g["exact"]["scale"] == 1.0 and g["exact"]["cond_variability"] > 0
    assert g["exact"]["cond_variability"] != g["cond_variability"]
    assert ev["summary"]["sampling_scale"] == 2.0 and "cond_variability_ratio_scale_1" in ev["summary"]
    csv = (run / "posterior_variance.csv").read_text().splitlines()
    assert csv[0] == "t,abar,var_0,var_1,var_2" and len(csv) == 21
    gain = ev["guidance_gain"]
    assert len(gain) == 10 and all(r["error_alone"] > 0 and r["error_guided"] > 0 for r in gain)
    # the end of a run evaluates with the quick protocol, one line per stage on stderr
    assert ev["protocol"] == ev["summary"]["protocol"] == "quick" and ev["n_test"] == 100 and ev["steps"] == 10
    for line in ("evaluation (quick protocol): 100 held-out images, 10 sampling steps", "factor metrics (200 fitted",
                 "interpolation check (5 pairs): ", "disk checks (fold, decode from the mean, 5 lines): ",
                 "generation figures: ", "evaluation written to "):
        assert line in r.stderr, (line, r.stderr[-2000:])
    # issue 29's instruments, written into the run directory
    for f in ("disk_checks.json", "fold.png", "decode.png", "interpolation_lines.png"):
        assert (run / f).is_file(), f
    assert 0 <= ev["summary"]["fold_fraction"] <= 0.5 and ev["disk_checks"]["interpolation_default_scale"].endswith("/5")


def test_guidance_gain_is_one_without_guidance_and_exact_on_a_linear_gaussian_model(fresh_seed):
    """Data x0 ~ N(0, I), z | x0 ~ N(x0, s2 I). The exact denoiser is E[eps | x_t] = sqrt(1 - a) x_t (error a
    per pixel) and the exact q(z | x_t) = N(sqrt(a) x_t, 1 - a + s2); with z = the clean image's posterior
    mean (x0), the guided error is a (s2 / (1 - a + s2))^2 per pixel, so the gain is (s2 / (1 - a + s2))^2.
    The encoder does not see the noise level, so the test's denoiser hands it over (guided_eps calls the
    denoiser before the encoder); the first encoder call, on the clean images, sees a = 1."""
    from types import SimpleNamespace

    import numpy as np

    from train.evaluate import guidance_gain_curve

    g = torch.Generator().manual_seed(fresh_seed)
    x = torch.randn(4000, 1, 2, 2, generator=g, dtype=torch.float64)
    abar = np.cumprod(1 - np.linspace(1e-4, 0.02, 400))
    s2 = float(torch.empty(()).uniform_(0.05, 0.5, generator=g))
    level = {"a": 1.0}

    def denoiser(x_t, t):
        level["a"] = float(abar[int(t[0])])
        return (1 - level["a"]) ** 0.5 * x_t

    def exact(v):
        a = level["a"]
        mu = a**0.5 * v.flatten(1)
        return mu, torch.full_like(mu, 1 - a + s2)

    def blind(v):  # depends on x only through a zero weight: no guidance
        mu = 0.0 * v.flatten(1) + 0.5
        return mu, torch.full_like(mu, 0.3)

    ones = guidance_gain_curve(SimpleNamespace(encoder=blind, denoiser=denoiser), abar, x, levels=4)
    assert [r["ratio"] for r in ones] == pytest.approx([1.0] * 4, abs=1e-9)
    level["a"] = 1.0
    rows = guidance_gain_curve(SimpleNamespace(encoder=exact, denoiser=denoiser), abar, x, levels=5)
    for r in rows:
        a = float(abar[r["t"]])
        assert r["error_alone"] == pytest.approx(4 * a, rel=0.1), r
        assert r["ratio"] == pytest.approx((s2 / (1 - a + s2)) ** 2, rel=0.1), (r, s2)
    assert guidance_gain_curve(SimpleNamespace(encoder=blind, denoiser=denoiser), abar, x, levels=1)[0]["t"] == 399


def test_sigkill_at_random_moments_then_resume_equals_an_uninterrupted_run(tmp_path, fresh_seed):
    """Kill a real training process with SIGKILL (checkpoints every step, so kills land inside checkpoint
    writes too), resume it, repeat; the finished run equals one that was never interrupted."""
    import random
    import signal
    import time

    seed = fresh_seed % 1000
    args = [*TINY_ARGS, "--steps", "40", "--ckpt-every", "1", "--seed", str(seed), "--n-train", "0",
            "--eval-at-end", "false", "--threads", "1"]
    run = [sys.executable, str(ROOT / "train" / "run.py")]
    r = subprocess.run([*run, "--config", "disks", *args, "--out", str(tmp_path / "full")], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    part, kills, rng = tmp_path / "part", 0, random.Random(fresh_seed)
    cmd = [*run, "--config", "disks", *args, "--out", str(part)]
    for attempt in range(3):
        p = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        t0 = time.time()
        while not (part / CHECKPOINT).exists() and p.poll() is None and time.time() - t0 < 60:
            time.sleep(0.001)
        # the first kill lands as soon as a checkpoint exists (a fast machine could finish 40 steps in the
        # random wait); the later ones at random moments, so that some land inside checkpoint writes
        time.sleep(rng.uniform(0.0, 0.6) if attempt else 0.0)
        if p.poll() is None:
            p.send_signal(signal.SIGKILL)
            kills += 1
        p.wait()
        cmd = [*run, "--resume", str(part)]
    r = subprocess.run(cmd, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert kills >= 1
    assert not list(part.glob(".*.tmp"))  # what killed writes left behind, removed on resume
    full, got = load_checkpoint(tmp_path / "full" / CHECKPOINT), load_checkpoint(part / CHECKPOINT)
    assert full["step"] == got["step"] == 40
    assert _states_equal(full["model"], got["model"]) and _states_equal(full["ema"], got["ema"])
    steps = [json.loads(ln)["step"] for ln in (part / "metrics.jsonl").read_text().splitlines()]
    assert steps == list(range(2, 41, 2))


def _paced(per_thread_s: dict):
    """A call that takes per_thread_s[torch's current thread count] seconds (a sleep: what train.threads
    compares is the caller's own timing, not torch's speed)."""
    def fn():
        time.sleep(per_thread_s[torch.get_num_threads()])
    return fn


def test_the_thread_count_is_the_faster_one_measured(monkeypatch):
    from train import threads

    prev = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        n, line = threads.choose(_paced({1: 0.002, 2: 0.03}), work=10_000)
        assert n == 1 and "threads: 1 of 2" in line and "measured" in line
        n, line = threads.choose(_paced({1: 0.03, 2: 0.002}), work=10_000)
        assert n == 2 and "threads: 2 of 2" in line
        n, line = threads.choose(_paced({1: 0.03, 2: 0.002}), work=threads.MIN_WORK - 1)  # short: not measured
        assert n == 1 and "not measured" in line
        assert torch.get_num_threads() == 2  # choose sets nothing
    finally:
        torch.set_num_threads(prev)


def test_measuring_threads_leaves_the_run_as_it_was(tmp_path, fresh_seed, monkeypatch):
    """The probe steps change neither weights, optimiser nor random state: a run that measured equals one
    told its thread count, and its checkpoint records the count, which a resumed run keeps."""
    import train.loop as loop

    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    prev = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        cfg = tiny_config(steps=4, seed=fresh_seed % 2**31, n_train=0)
        monkeypatch.setattr(loop, "choose_threads", lambda fn, work: (fn(), fn(), (1, "threads: 1 (test)"))[-1])
        measured = Trainer(cfg, tmp_path / "measured")
        measured.run()
        told = Trainer(cfg.replace(threads=1), tmp_path / "told")
        told.run()
        a = load_checkpoint(tmp_path / "measured" / CHECKPOINT)
        b = load_checkpoint(tmp_path / "told" / CHECKPOINT)
        assert _states_equal(a["model"], b["model"]) and _states_equal(a["ema"], b["ema"])
        assert a["threads"] == 1 and b["threads"] == 0
        monkeypatch.setattr(loop, "choose_threads", lambda fn, work: pytest.fail("a resumed run measured again"))
        again = Trainer(cfg.replace(steps=6), tmp_path / "measured", resume=True)
        assert again.set_threads().startswith("threads: 1 (as the run's checkpoint records")
    finally:
        torch.set_num_threads(prev)
