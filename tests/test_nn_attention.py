"""Linear attention against its explicit O(N^2) kernel sum, and tiled softmax against dense softmax."""
import torch

from daflow.nn.attention import (GlobalLinearAttention, linear_attention, quadratic_kernel_attention,
                                 softmax_attention, tiled_softmax_attention)


def _qkv(n, d=8, heads=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(2, heads, n, d, generator=g, dtype=torch.float64) for _ in range(3)]


def test_linear_form_equals_quadratic_kernel_sum():
    q, k, v = _qkv(37)
    torch.testing.assert_close(linear_attention(q, k, v, eps=0.0), quadratic_kernel_attention(q, k, v), rtol=1e-12, atol=1e-12)


def test_linear_attention_is_a_convex_combination_of_values():
    q, k, v = _qkv(50, seed=1)
    v = torch.ones_like(v)  # weights sum to one: constant values pass through unchanged
    torch.testing.assert_close(linear_attention(q, k, v, eps=0.0), v)


def test_one_tile_is_dense_softmax_and_tiles_do_not_mix():
    q, k, v = _qkv(24, seed=2)
    torch.testing.assert_close(tiled_softmax_attention(q, k, v, 24), softmax_attention(q, k, v))
    tiled = tiled_softmax_attention(q, k, v, 8)
    torch.testing.assert_close(tiled[:, :, 8:16], softmax_attention(q[:, :, 8:16], k[:, :, 8:16], v[:, :, 8:16]))


def test_layer_mixes_globally_and_keeps_shape():
    torch.manual_seed(0)
    layer = GlobalLinearAttention(16, 4, tile=4).double()
    x = torch.randn(1, 32, 16, dtype=torch.float64, requires_grad=True)
    y = layer(x)
    assert y.shape == x.shape
    y[0, 0].sum().backward()  # the first token's output depends on the last tile's tokens
    assert x.grad[0, -1].abs().sum() > 0


def test_blocked_layer_equals_one_pass_forward_and_backward():
    """Long sequences run in blocks (summaries summed over blocks): same output and gradients."""
    for tile in (0, 4):
        torch.manual_seed(1)
        one_pass = GlobalLinearAttention(12, 3, tile=tile).double()
        blocked = GlobalLinearAttention(12, 3, tile=tile).double()
        blocked.load_state_dict(one_pass.state_dict())
        blocked.block = 8  # 40 tokens: 5 blocks of 2 tiles
        x = torch.randn(2, 40, 12, dtype=torch.float64)
        xa, xb = x.clone().requires_grad_(), x.clone().requires_grad_()
        ya, yb = one_pass(xa), blocked(xb)
        torch.testing.assert_close(yb, ya, rtol=1e-12, atol=1e-12)
        w = torch.randn_like(ya)
        (ya * w).sum().backward()
        (yb * w).sum().backward()
        torch.testing.assert_close(xb.grad, xa.grad, rtol=1e-10, atol=1e-12)
        torch.testing.assert_close(blocked.qkv.weight.grad, one_pass.qkv.weight.grad, rtol=1e-10, atol=1e-12)
