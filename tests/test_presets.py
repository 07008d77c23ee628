"""The configs/ presets carry the reference settings named in docs/references.md."""
import os

import main as cli

CONFIGS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "configs")


def preset(name, *flags):
    _, args = cli.parse_args(["--config", os.path.join(CONFIGS, name), *flags])
    return args


def test_irm_gray_oracle_has_its_own_settings_not_erms():
    """IRM authors' reproduce script: the grayscale oracle's hidden size, l2, lr and steps."""
    a = preset("irm_cmnist_gray.yaml")
    assert a.grayscale and a.irm_penalty_weight == 0
    assert (a.hidden_dim, a.irm_l2, a.lr, a.epochs) == (
        83, 0.0008602868865288383, 0.0028171488133821726, 101)


def test_cifar_random_labels_preset_follows_the_andmask_authors():
    """A small ResNet with BatchNorm, and lr x0.1 at three quarters of training."""
    from torch import nn
    from network import build_network
    a = preset("cifar_random_labels.yaml")
    f = build_network(a.f_network_name)
    assert any(isinstance(m, nn.BatchNorm2d) for m in f.modules())
    assert a.lr_decay_rate == 0.1 and a.lr_decay_period == a.epochs * 3 // 4
    assert a.andmask_rescale == 1


def test_andmask_presets_rescale_by_the_kept_fraction_as_the_authors_default():
    for name in ("irm_cmnist_andmask.yaml", "spiral.yaml", "cifar_random_labels.yaml"):
        assert preset(name).andmask_rescale == 1, name
