import pytest
import torch

from network import build_network, grad_reverse


@pytest.mark.parametrize("mu", [0.1, 1.0, 2.5])
def test_gradient_reversal_is_identity_forward_and_scaled_negation_backward(mu):
    x = torch.randn(4, 3, requires_grad=True)
    w = torch.randn(4, 3)
    y = grad_reverse(x, mu)
    assert torch.equal(y, x)
    (y * w).sum().backward()
    assert torch.allclose(x.grad, -mu * w)


def test_gradient_reversal_inside_a_graph():
    lin = torch.nn.Linear(3, 1)
    x = torch.randn(5, 3, requires_grad=True)
    lin(grad_reverse(x, 0.1)).sum().backward()
    expected = -0.1 * lin.weight.detach().expand(5, 3)
    assert torch.allclose(x.grad, expected)
    # the layer after the reversal still gets its ordinary gradient
    assert torch.allclose(lin.weight.grad, x.detach().sum(0, keepdim=True))


def test_reference_network_shapes():
    f = build_network("cmnist_f")
    g = build_network("cmnist_g", num_main_classes=10)
    h = build_network("cmnist_h", num_bias_classes=8)
    feat = f(torch.randn(2, 3, 28, 28))
    assert feat.shape == (2, 32, 14, 14)
    assert g(feat).shape == (2, 10)
    assert h(feat).shape == (2, 3, 8, 14, 14)


def test_reference_init_matches_he_normal_spread():
    f = build_network("cmnist_f")
    conv = f[1]  # 5x5, 32 output channels
    expected_std = (2.0 / (5 * 5 * 32)) ** 0.5
    assert abs(conv.weight.std().item() - expected_std) / expected_std < 0.1


def test_unknown_network_lists_known_names():
    with pytest.raises(ValueError, match="cmnist_f"):
        build_network("resnet_9000")
