"""The models shipped in the package: chosen by name, listed by `sami-rt info --list`."""

import shutil
import subprocess
import sys

import pytest

from sami_rt.contract.bundle import BundleError
from sami_rt.runtime import DEFAULT_MODEL, Runtime, resolve_model, shipped_models


def cli(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "sami_rt.cli.main", *args], capture_output=True, text=True, cwd=cwd)


def test_every_shipped_model_loads_by_name():
    shipped = shipped_models()
    assert {"disks-3d", "disks-small", "fashion-mnist"} <= set(shipped) and shipped["disks-3d"] == DEFAULT_MODEL
    for name, path in shipped.items():
        assert resolve_model(name) == path
        assert Runtime(name, device="cpu").bundle.root.resolve() == path.resolve()


def test_a_path_wins_over_a_shipped_name(tmp_path, monkeypatch):
    local = tmp_path / "disks-small"
    shutil.copytree(shipped_models()["disks-3d"], local)  # another model under a shipped one's name
    monkeypatch.chdir(tmp_path)
    assert resolve_model("disks-small").resolve() == local.resolve()


def test_an_unknown_model_name_says_which_exist():
    with pytest.raises(BundleError, match="model bundle no-such-model is not a directory, nor the name of a model "
                                          r"shipped in the package \(shipped: .*disks-small"):
        resolve_model("no-such-model")
    r = cli("info", "--model", "no-such-model")
    assert r.returncode == 1 and r.stderr.strip().count("\n") == 0 and "shipped:" in r.stderr


def test_info_list_names_every_shipped_model_and_the_default():
    r = cli("info", "--list")
    assert r.returncode == 0, r.stderr
    lines = [ln for ln in r.stdout.splitlines() if not ln.startswith(" ")]
    assert {ln.split(":")[0].replace(" (default)", "") for ln in lines} == set(shipped_models())
    assert [ln.split(":")[0] for ln in lines if "(default)" in ln] == ["disks-3d (default)"]
    r = cli("info", "--model", "disks-small", "--device", "cpu")
    assert r.returncode == 0 and "latent dim" in r.stdout
