"""export/graphs.PlainGroupNorm, the form the exported graphs compute GroupNorm in, against torch's
nn.GroupNorm: outputs and input gradients, on inputs far from zero mean (where a one-pass variance would
lose its digits) and on 2-d, 3-d and 5-d inputs as well as images."""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn

from export.graphs import PlainGroupNorm


@pytest.mark.parametrize("shape,groups", [((3, 12, 5, 7), 4), ((2, 16, 8, 8), 8), ((2, 6, 9), 3), ((2, 8, 3, 4, 5), 2),
                                          ((4, 5, 6, 6), 5), ((1, 32, 4, 4), 1), ((5, 12), 3)])
def test_plain_groupnorm_matches_torch_in_value_and_gradient(shape, groups, fresh_seed):
    g = torch.Generator().manual_seed(fresh_seed)
    C = shape[1]
    gn = nn.GroupNorm(groups, C, eps=1e-5).double()
    with torch.no_grad():
        gn.weight.copy_(torch.randn(C, generator=g, dtype=torch.float64))
        gn.bias.copy_(torch.randn(C, generator=g, dtype=torch.float64))
    plain = PlainGroupNorm(gn)
    # an offset shared by every channel, about 300 times the spread within a group (per-channel offsets of about
    # 10 and unit noise): a one-pass E[x^2] - E[x]^2 would lose the variance to cancellation in float32
    per_channel = 10 * torch.randn(1, C, *([1] * (len(shape) - 2)), generator=g, dtype=torch.float64)
    x = (torch.randn(*shape, generator=g, dtype=torch.float64) + per_channel + 3e3).requires_grad_(True)
    w = torch.randn(*shape, generator=g, dtype=torch.float64)
    want = gn(x)
    (gx_want,) = torch.autograd.grad((want * w).sum(), x)
    got = plain(x)
    (gx_got,) = torch.autograd.grad((got * w).sum(), x)
    torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(gx_got, gx_want, rtol=1e-8, atol=1e-8 * float(gx_want.abs().max()))
    # in float32 as exported: as close to the float64 result on the same (float32) input as torch's own float32
    # GroupNorm is (measured over 32 cases: at most 2.1 times torch's error; a one-pass variance up to 1e4 times)
    with torch.no_grad():
        x32 = x.detach().float()
        want32 = gn(x32.double())
        scale = float(want32.abs().max())
        err_plain = float((PlainGroupNorm(gn.float())(x32).double() - want32).abs().max()) / scale
        err_torch = float((gn.float()(x32).double() - want32).abs().max()) / scale
    assert err_plain <= 4 * err_torch + 5e-6, (err_plain, err_torch)


def test_plain_groupnorm_keeps_the_activation_four_dimensional(fresh_seed):
    """Every operation on the full-size activation keeps its (B, C, H, W) shape: only the (B, C) statistics are
    reshaped to groups (the form's reason: channels-last runtimes reorder around each reshape of a large tensor)."""
    from torch.fx.experimental.proxy_tensor import make_fx

    gn = nn.GroupNorm(4, 16)
    x = torch.randn(2, 16, 8, 8, generator=torch.Generator().manual_seed(fresh_seed))
    gm = make_fx(PlainGroupNorm(gn))(x)
    reshapes = [n for n in gm.graph.nodes if n.op == "call_function" and "view" in str(n.target) or
                n.op == "call_function" and "reshape" in str(n.target)]
    assert reshapes
    for n in reshapes:
        src = n.args[0].meta["val"]
        assert src.numel() <= 2 * 16, (n, tuple(src.shape))
