"""ONNX graphs built around an external denoiser that PyTorch cannot trace (a frozen ONNX denoiser).

- ``wrap_denoiser``: the external graph inside the bundle's ``denoiser`` contract, ``(x_t [B,C,H,W], t [B]
  int64) -> eps``, with the conversion of train/frozen.py (eps, v, or EDM's D(x, sigma)) as graph nodes
  built from the same definition (``sami_rt.sampling.schedule.eps_from_prediction``, ``ve_image``, ``ve_sigma``)
  and ``abar`` as a table inside the graph;
- ``compose_guided_eps``: that denoiser and the exported ``guidance`` graph fused into the ``guided_eps``
  contract, ``eps_hat = eps - scale * sqrt(1 - abar_t) * g``, so a sampling step stays one call.

Both graphs' nodes and initializers are copied in with a name prefix (onnx.compose.add_prefix), and the
contract's inputs are fed to them through Identity nodes.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from sami_rt.sampling.schedule import eps_from_prediction, ve_image, ve_sigma

def _onnx():
    import onnx
    from onnx import compose, helper, numpy_helper

    return onnx, compose, helper, numpy_helper


def _opset(model) -> int:
    return max(o.version for o in model.opset_import if o.domain in ("", "ai.onnx"))


def _io(helper, onnx, name, elem, dims):
    return helper.make_tensor_value_info(name, elem, dims)


class _Graph:
    """Arithmetic on the tensors of a graph being built: ``g(name)`` is a tensor, and ``+ - * /`` on tensors
    append the ONNX nodes that compute them (to ``nodes``), so that ``sami_rt.sampling.schedule``'s conversions, written
    for arrays, become graph nodes; ``g.name(tensor, name)`` gives a result its contract name."""

    def __init__(self, helper, nodes: list, prefix: str):
        self.helper, self.nodes, self.prefix = helper, nodes, prefix

    def __call__(self, tensor: str) -> "_Tensor":
        return _Tensor(self, tensor)

    def op(self, op: str, a: "_Tensor", b: "_Tensor") -> "_Tensor":
        out = f"{self.prefix}{op.lower()}{len(self.nodes)}"
        self.nodes.append(self.helper.make_node(op, [a.tensor, b.tensor], [out]))
        return _Tensor(self, out)

    def name(self, t: "_Tensor", name: str) -> None:
        self.nodes.append(self.helper.make_node("Identity", [t.tensor], [name]))


class _Tensor:
    def __init__(self, graph: _Graph, tensor: str):
        self.graph, self.tensor = graph, tensor

    def __add__(self, other):
        return self.graph.op("Add", self, other)

    def __sub__(self, other):
        return self.graph.op("Sub", self, other)

    def __mul__(self, other):
        return self.graph.op("Mul", self, other)

    def __truediv__(self, other):
        return self.graph.op("Div", self, other)


def wrap_denoiser(src: str | Path, param: str, abar: np.ndarray, C: int, H: int, W: int):
    """The contract's denoiser graph around an external ONNX denoiser; returns an onnx ModelProto."""
    onnx, compose, helper, numpy_helper = _onnx()
    inner = onnx.load(str(src))
    if len(inner.graph.input) != 2 or len(inner.graph.output) < 1:
        raise ValueError(f"{src}: a denoiser graph has two inputs and one output")
    inner = compose.add_prefix(inner, prefix="ext/")
    a_in, b_in = (i.name for i in inner.graph.input)
    b_type = inner.graph.input[1].type.tensor_type.elem_type
    out = inner.graph.output[0].name
    F, I64 = onnx.TensorProto.FLOAT, onnx.TensorProto.INT64
    inits = [numpy_helper.from_array(np.asarray(abar, np.float32), "wrap/abar"),
             numpy_helper.from_array(np.array([-1, 1, 1, 1], np.int64), "wrap/shape4"),
             numpy_helper.from_array(np.array(1.0, np.float32), "wrap/one")]
    pre = [helper.make_node("Gather", ["wrap/abar", "t"], ["wrap/a"], axis=0),
           helper.make_node("Sqrt", ["wrap/a"], ["wrap/sa"]),
           helper.make_node("Sub", ["wrap/one", "wrap/a"], ["wrap/1ma"]),
           helper.make_node("Sqrt", ["wrap/1ma"], ["wrap/s1ma"]),
           helper.make_node("Reshape", ["wrap/sa", "wrap/shape4"], ["wrap/sa4"]),
           helper.make_node("Reshape", ["wrap/s1ma", "wrap/shape4"], ["wrap/s1ma4"])]
    post: list = []
    pre_sym, post_sym = _Graph(helper, pre, "wrap/in_"), _Graph(helper, post, "wrap/out_")
    if param in ("eps", "v"):
        pre.append(helper.make_node("Identity", ["x_t"], [a_in]))
        pre.append(helper.make_node("Cast", ["t"], [b_in], to=b_type) if b_type != I64
                   else helper.make_node("Identity", ["t"], [b_in]))
        kind = param
    elif param == "x0":  # EDM: x = x_t / sqrt(a), sigma = sqrt(1 - a) / sqrt(a); D is x0 on the VP scale
        pre_sym.name(ve_image(pre_sym("x_t"), pre_sym("wrap/sa4")), a_in)
        sigma = ve_sigma(pre_sym("wrap/sa"), pre_sym("wrap/s1ma"))
        pre.append(helper.make_node("Cast", [sigma.tensor], [b_in], to=b_type) if b_type != F
                   else helper.make_node("Identity", [sigma.tensor], [b_in]))
        kind = "x0-vp"
    else:
        raise ValueError(f"unknown parameterisation {param!r}")
    post_sym.name(eps_from_prediction(kind, post_sym(out), post_sym("x_t"), post_sym("wrap/sa4"),
                                      post_sym("wrap/s1ma4")), "eps")
    graph = helper.make_graph(
        pre + list(inner.graph.node) + post, "denoiser",
        [_io(helper, onnx, "x_t", F, ["batch", C, H, W]), _io(helper, onnx, "t", I64, ["batch"])],
        [_io(helper, onnx, "eps", F, ["batch", C, H, W])],
        initializer=list(inner.graph.initializer) + inits)
    model = helper.make_model(graph, opset_imports=list(inner.opset_import), functions=list(inner.functions))
    model.ir_version = inner.ir_version
    onnx.checker.check_model(model)
    return model


def compose_guided_eps(denoiser, guidance, abar: np.ndarray, C: int, H: int, W: int, D: int):
    """guided_eps = denoiser(x_t, t) - scale * sqrt(1 - abar[t]) * guidance(x_t, z, mask), one graph."""
    onnx, compose, helper, numpy_helper = _onnx()
    if _opset(denoiser) != _opset(guidance):
        from onnx import version_converter

        guidance = version_converter.convert_version(guidance, _opset(denoiser))
    d = compose.add_prefix(denoiser, prefix="den/")
    g = compose.add_prefix(guidance, prefix="gui/")
    F, I64 = onnx.TensorProto.FLOAT, onnx.TensorProto.INT64
    feed = [helper.make_node("Identity", [name], [f"den/{name}"]) for name in ("x_t", "t")]
    feed += [helper.make_node("Identity", [name], [f"gui/{name}"]) for name in ("x_t", "z", "mask")]
    inits = [numpy_helper.from_array(np.sqrt(1 - np.asarray(abar, np.float64)).astype(np.float32), "fuse/s1ma"),
             numpy_helper.from_array(np.array([-1, 1, 1, 1], np.int64), "fuse/shape4")]
    tail = [helper.make_node("Gather", ["fuse/s1ma", "t"], ["fuse/s"], axis=0),
            helper.make_node("Mul", ["fuse/s", "scale"], ["fuse/ss"]),
            helper.make_node("Reshape", ["fuse/ss", "fuse/shape4"], ["fuse/ss4"]),
            helper.make_node("Mul", ["fuse/ss4", "gui/g"], ["fuse/sg"]),
            helper.make_node("Sub", ["den/eps", "fuse/sg"], ["eps_hat"])]
    opsets = {o.domain: o for o in list(d.opset_import) + list(g.opset_import)}
    graph = helper.make_graph(
        feed + list(d.graph.node) + list(g.graph.node) + tail, "guided_eps",
        [_io(helper, onnx, "x_t", F, ["batch", C, H, W]), _io(helper, onnx, "t", I64, ["batch"]),
         _io(helper, onnx, "z", F, ["batch", D]), _io(helper, onnx, "mask", F, ["batch", D]),
         _io(helper, onnx, "scale", F, ["batch"])],
        [_io(helper, onnx, "eps_hat", F, ["batch", C, H, W])],
        initializer=list(d.graph.initializer) + list(g.graph.initializer) + inits)
    model = helper.make_model(graph, opset_imports=list(opsets.values()),
                              functions=list(d.functions) + list(g.functions))
    model.ir_version = max(denoiser.ir_version, guidance.ir_version)
    onnx.checker.check_model(model)
    return model
