"""An ONNX denoiser gives the run its image shape (its declared input), or is checked against the
configuration's before training when the graph leaves the shape open (train/frozen.py)."""

import numpy as np
import pytest

from tests.conftest import tiny_cli_args, tiny_config

onnx = pytest.importorskip("onnx")
from onnx import TensorProto, helper  # noqa: E402


def _eps_graph(path, shape, reshape_to=None):
    """A tiny (x_t, t) -> eps graph, eps = 0.5 x_t + 1e-3 t, whose x_t input declares ``shape`` (strings are
    dynamic dimensions); ``reshape_to`` reshapes x_t first, so that the graph runs only on that shape."""
    nodes = [helper.make_node("Cast", ["t"], ["tf"], to=TensorProto.FLOAT),
             helper.make_node("Reshape", ["tf", "col"], ["t4"]),
             helper.make_node("Mul", ["t4", "k"], ["tk"])]
    inits = [helper.make_tensor("col", TensorProto.INT64, [4], [-1, 1, 1, 1]),
             helper.make_tensor("k", TensorProto.FLOAT, [], [1e-3]),
             helper.make_tensor("half", TensorProto.FLOAT, [], [0.5])]
    x = "x_t"
    if reshape_to is not None:
        nodes.append(helper.make_node("Reshape", ["x_t", "fixed"], ["xr"]))
        inits.append(helper.make_tensor("fixed", TensorProto.INT64, [4], [-1, *reshape_to]))
        x = "xr"
    nodes += [helper.make_node("Mul", [x, "half"], ["xh"]), helper.make_node("Add", ["xh", "tk"], ["eps"])]
    out_shape = ["batch", *reshape_to] if reshape_to is not None else shape
    g = helper.make_graph(nodes, "eps", [helper.make_tensor_value_info("x_t", TensorProto.FLOAT, shape),
                                         helper.make_tensor_value_info("t", TensorProto.INT64, ["batch"])],
                          [helper.make_tensor_value_info("eps", TensorProto.FLOAT, out_shape)], inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    onnx.save(m, str(path))
    return path


def _run_args(tmp_path, src, **kw):
    """train/run.py's arguments for tiny_config() (one step) on the denoiser ``src``."""
    return [*tiny_cli_args(steps=1, warmup=1, log_every=1, ckpt_every=1, **kw), "--out", str(tmp_path / "run"),
            "--no-eval", "--denoiser", str(src)]


def test_the_run_takes_the_onnx_graphs_image_size(tmp_path, capsys):
    import torch

    from train.loop import Trainer, load_run
    from train.run import main

    src = _eps_graph(tmp_path / "d.onnx", ["batch", 1, 24, 24])
    tr = Trainer(tiny_config(steps=1, denoiser=str(src)), tmp_path / "direct")
    assert (tr.cfg.channels, tr.cfg.image_size) == (1, 24)
    x = torch.randn(2, 1, 24, 24)
    torch.testing.assert_close(tr.model.denoiser(x, torch.tensor([3, 7])),
                               0.5 * x + 1e-3 * torch.tensor([3.0, 7.0]).reshape(-1, 1, 1, 1))
    assert main(_run_args(tmp_path, src)) == 0
    err = capsys.readouterr().err
    assert "image 1x24x24 from its input shape [batch, 1, 24, 24] (the configuration said 1x16x16)" in err
    _, cfg, _, step = load_run(tmp_path / "run")
    assert (cfg.channels, cfg.image_size, step) == (1, 24, 1)


def test_the_run_takes_the_onnx_graphs_channels_where_the_data_can_give_them(tmp_path):
    from train.frozen import FrozenDenoiserError, resolve

    src = _eps_graph(tmp_path / "d.onnx", ["batch", 3, 24, 24])
    cfg, frozen = resolve(tiny_config(denoiser=str(src), dataset="folder", data_path=str(tmp_path)))
    assert (cfg.channels, cfg.image_size) == (3, 24) and "image 3x24x24" in frozen.summary
    with pytest.raises(FrozenDenoiserError, match="takes 3-channel images, but the disks data are grey"):
        resolve(tiny_config(denoiser=str(src)))


def test_a_dynamic_onnx_input_keeps_the_configurations_size(tmp_path):
    from train.frozen import resolve

    cfg, frozen = resolve(tiny_config(denoiser=str(_eps_graph(tmp_path / "d.onnx", ["batch", 1, "h", "w"]))))
    assert (cfg.channels, cfg.image_size) == (1, 16)
    assert ("image 1x16x16: the channels from its input shape [batch, 1, h, w], the size from the configuration"
            in frozen.summary)
    # only the height is declared: the width follows it (square images)
    cfg, _ = resolve(tiny_config(denoiser=str(_eps_graph(tmp_path / "e.onnx", ["batch", 1, 20, "w"]))))
    assert cfg.image_size == 20
    # the size declared, the channels left open
    cfg, frozen = resolve(tiny_config(denoiser=str(_eps_graph(tmp_path / "f.onnx", ["batch", "c", 20, 20]))))
    assert (cfg.channels, cfg.image_size) == (1, 20)
    assert ("image 1x20x20: the size from its input shape [batch, c, 20, 20], the channels from the configuration"
            in frozen.summary)
    cfg, frozen = resolve(tiny_config(denoiser=str(_eps_graph(tmp_path / "g.onnx", ["batch", "c", "h", "w"]))))
    assert "its input shape [batch, c, h, w] leaves the image open: 1x16x16 from the configuration" in frozen.summary


def test_a_dynamic_graph_that_does_not_fit_the_configuration_is_one_line_before_training(tmp_path, capfd):
    from train.frozen import FrozenDenoiserError, resolve
    from train.run import main

    src = _eps_graph(tmp_path / "d.onnx", ["batch", 1, "h", "w"], reshape_to=(1, 24, 24))
    with pytest.raises(FrozenDenoiserError, match=r"does not run on a 1x16x16 image \(input shape \[batch, 1, h, w\]"):
        resolve(tiny_config(denoiser=str(src)))
    assert resolve(tiny_config(denoiser=str(src), image_size=24))[0].image_size == 24
    assert main(_run_args(tmp_path, src)) == 1  # one 'error:' line, as every frozen-denoiser error
    err = capfd.readouterr().err  # onnxruntime's own log (file descriptor 2) included
    assert "does not run on a 1x16x16 image" in err and "requested shape:{-1,1,24,24}" in err
    assert "Traceback" not in err and "onnxruntime:" not in err.replace("onnxruntime::", "")
    assert len([ln for ln in err.splitlines() if "error" in ln.lower()]) == 1
    assert not (tmp_path / "run" / "checkpoint.pt").exists()


def test_a_graph_that_is_not_an_image_denoiser_is_one_sentence(tmp_path):
    from train.frozen import FrozenDenoiserError, resolve

    with pytest.raises(FrozenDenoiserError, match=r"takes images \[batch, channels, height, width\]"):
        resolve(tiny_config(denoiser=str(_eps_graph(tmp_path / "a.onnx", ["batch", 256]))))
    with pytest.raises(FrozenDenoiserError, match="declares 16x24 images; training takes square images"):
        resolve(tiny_config(denoiser=str(_eps_graph(tmp_path / "b.onnx", ["batch", 1, 16, 24]))))


def test_an_onnx_graph_with_a_fixed_batch_is_one_sentence(tmp_path, fresh_seed):
    """A graph exported without a dynamic batch axis ran the one-image check and then failed at the first
    training batch inside onnxruntime; it is refused before training."""
    from train.frozen import FrozenDenoiserError, resolve

    n = int(np.random.default_rng(fresh_seed).integers(1, 9))
    src = _eps_graph(tmp_path / "f.onnx", [n, 1, 16, 16])
    with pytest.raises(FrozenDenoiserError, match=f"declares a fixed batch of {n}; export the graph with a dynamic"):
        resolve(tiny_config(denoiser=str(src)))
