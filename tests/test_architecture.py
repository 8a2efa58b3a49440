"""Every family's architectural constants as its lesson sets them: layer sizes, kernels,
strides and padding, which layers have a bias, the activations' slopes, the normalisation
and its epsilon and momentum, in order (at width 4, on the dataset each lesson trains on).
Checked against the lessons' code: ie534 (seed 002: LayerNorm and LeakyReLU(0.01) in the
critic, BatchNorm and ReLU in the generator), dcgan (seed 003: no bias, LeakyReLU 0.2, no
BatchNorm on the first layer), mlp and infogan (seed 004: LeakyReLU 0.01; InfoGAN's ReLU
before BatchNorm) and udacity-mlp (seed 003: no bias before BatchNorm)."""
import pytest
import torch.nn as nn

import models


def signature(model):
    """The layers' constants in registration order, one short text each."""
    out = []
    for m in model.modules():
        bias = "" if getattr(m, "bias", None) is not None else " nobias"
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
            kind = "conv" if isinstance(m, nn.Conv2d) else "deconv"
            out.append(f"{kind} {m.in_channels}>{m.out_channels} k{m.kernel_size[0]} "
                       f"s{m.stride[0]} p{m.padding[0]}{bias}")
        elif isinstance(m, nn.Linear):
            out.append(f"linear {m.in_features}>{m.out_features}{bias}")
        elif isinstance(m, nn.LeakyReLU):
            out.append(f"lrelu {m.negative_slope:g}")
        elif isinstance(m, nn.ReLU):
            out.append("relu")
        elif isinstance(m, nn.Tanh):
            out.append("tanh")
        elif isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)):
            out.append(f"{type(m).__name__.lower()} {m.num_features} eps{m.eps:g} "
                       f"m{m.momentum:g}" + ("" if m.affine else " noaffine"))
        elif isinstance(m, nn.LayerNorm):
            out.append(f"ln {list(m.normalized_shape)} eps{m.eps:g}"
                       + ("" if m.elementwise_affine else " noaffine"))
        elif isinstance(m, nn.MaxPool2d):
            out.append(f"maxpool {m.kernel_size}")
    return out


EXPECTED = {
    ('ie534', 'D'): [
        'conv 3>4 k3 s1 p1', 'ln [4, 32, 32] eps1e-05', 'lrelu 0.01', 'conv 4>4 k3 s2 p1',
        'ln [4, 16, 16] eps1e-05', 'lrelu 0.01', 'conv 4>4 k3 s1 p1', 'ln [4, 16, 16] eps1e-05',
        'lrelu 0.01', 'conv 4>4 k3 s2 p1', 'ln [4, 8, 8] eps1e-05', 'lrelu 0.01',
        'conv 4>4 k3 s1 p1', 'ln [4, 8, 8] eps1e-05', 'lrelu 0.01', 'conv 4>4 k3 s1 p1',
        'ln [4, 8, 8] eps1e-05', 'lrelu 0.01', 'conv 4>4 k3 s1 p1', 'ln [4, 8, 8] eps1e-05',
        'lrelu 0.01', 'conv 4>4 k3 s2 p1', 'ln [4, 4, 4] eps1e-05', 'lrelu 0.01', 'maxpool 4',
        'linear 4>1', 'linear 4>10',
    ],
    ('ie534', 'G'): [
        'linear 16>64', 'batchnorm2d 4 eps1e-05 m0.1', 'deconv 4>4 k4 s2 p1',
        'batchnorm2d 4 eps1e-05 m0.1', 'relu', 'conv 4>4 k3 s1 p1', 'batchnorm2d 4 eps1e-05 m0.1',
        'relu', 'conv 4>4 k3 s1 p1', 'batchnorm2d 4 eps1e-05 m0.1', 'relu', 'conv 4>4 k3 s1 p1',
        'batchnorm2d 4 eps1e-05 m0.1', 'relu', 'deconv 4>4 k4 s2 p1',
        'batchnorm2d 4 eps1e-05 m0.1', 'relu', 'conv 4>4 k3 s1 p1', 'batchnorm2d 4 eps1e-05 m0.1',
        'relu', 'deconv 4>4 k4 s2 p1', 'batchnorm2d 4 eps1e-05 m0.1', 'relu', 'conv 4>3 k3 s1 p1',
    ],
    ('dcgan', 'D'): [
        'conv 3>4 k4 s2 p1 nobias', 'lrelu 0.2', 'conv 4>8 k4 s2 p1 nobias',
        'batchnorm2d 8 eps1e-05 m0.1', 'lrelu 0.2', 'conv 8>16 k4 s2 p1 nobias',
        'batchnorm2d 16 eps1e-05 m0.1', 'lrelu 0.2', 'linear 256>1', 'linear 256>10',
    ],
    ('dcgan', 'G'): [
        'linear 16>256', 'deconv 16>8 k4 s2 p1 nobias', 'batchnorm2d 8 eps1e-05 m0.1', 'relu',
        'deconv 8>4 k4 s2 p1 nobias', 'batchnorm2d 4 eps1e-05 m0.1', 'relu',
        'deconv 4>3 k4 s2 p1 nobias',
    ],
    ('mlp', 'D'): [
        'linear 784>4', 'lrelu 0.01', 'linear 4>4', 'lrelu 0.01', 'linear 4>1', 'linear 4>10',
    ],
    ('mlp', 'G'): [
        'linear 16>16', 'relu', 'linear 16>16', 'relu', 'linear 16>784', 'tanh',
    ],
    ('infogan', 'D'): [
        'conv 1>4 k5 s1 p0', 'lrelu 0.01', 'maxpool 2', 'conv 4>8 k5 s1 p0', 'lrelu 0.01',
        'maxpool 2', 'linear 128>128', 'lrelu 0.01', 'linear 128>1', 'linear 128>10',
    ],
    ('infogan', 'G'): [
        'linear 16>128', 'relu', 'batchnorm1d 128 eps1e-05 m0.1', 'linear 128>784', 'relu',
        'batchnorm1d 784 eps1e-05 m0.1', 'deconv 16>8 k4 s2 p1', 'relu',
        'batchnorm2d 8 eps1e-05 m0.1', 'deconv 8>1 k4 s2 p1', 'tanh',
    ],
    ('udacity-mlp', 'D'): [
        'linear 784>8 nobias', 'batchnorm1d 8 eps1e-05 m0.1', 'relu', 'linear 8>4 nobias',
        'batchnorm1d 4 eps1e-05 m0.1', 'relu', 'linear 4>1', 'linear 4>10',
    ],
}


def build(family, role):
    size, channels = (28, 1) if family in ("mlp", "infogan", "udacity-mlp") else (32, 3)
    if role == "G":
        return models.generator(family, 16, 4, channels, size)
    options = dict(batch_norm=True) if family == "udacity-mlp" else {}
    return models.discriminator(family, 4, 10, channels, size, **options)


@pytest.mark.parametrize("family,role", list(EXPECTED), ids=[f"{f}-{r}" for f, r in EXPECTED])
def test_each_familys_constants_are_its_lessons(family, role):
    assert signature(build(family, role)) == EXPECTED[(family, role)]


def test_every_family_and_role_is_checked():
    assert set(EXPECTED) == {(f, r) for f, fam in models.ARCHITECTURES.items()
                             for r in ("D", "G") if r == "D" or fam.generator}


def test_the_generators_end_in_tanh_and_the_critics_in_a_raw_score():
    """ie534 and dcgan apply tanh in forward: outputs stay in [-1, 1] however large the
    weights; the critics' scores are unbounded (WGAN needs them so)."""
    import torch

    for family, fam in models.ARCHITECTURES.items():
        if fam.generator is None:
            continue
        g = build(family, "G").eval()
        for p in g.parameters():
            p.data.mul_(50)
        x = g(torch.randn(4, 16))
        assert x.abs().max() <= 1 and x.abs().max() > 0.99, family
        d = build(family, "D")
        for p in d.parameters():
            p.data.mul_(50)
        score, _ = d(torch.randn(2, *x.shape[1:]) * 10)
        assert score.abs().max() > 1, family
