import pytest
import torch
import torch.nn as nn

import train_gan
from models import Discriminator, Generator
from utils.data import Batches


@pytest.mark.parametrize("width", [196, 16])
def test_discriminator_shapes(width):
    d = Discriminator(width=width)
    critic, logits = d(torch.randn(3, 3, 32, 32))
    assert critic.shape == (3,) and logits.shape == (3, 10)
    for layer in range(1, 9):
        assert d.features(torch.randn(2, 3, 32, 32), layer).shape == (2, width)


def test_discriminator_layers_follow_the_table():
    d = Discriminator(width=8)
    strides = [b[0].stride[0] for b in d.blocks]
    assert strides == [1, 2, 1, 2, 1, 1, 1, 2]
    assert all(b[0].kernel_size == (3, 3) and b[0].padding == (1, 1) for b in d.blocks)
    # LayerNorm over (C, H, W) of each layer's output, then LeakyReLU
    sizes = [32, 16, 16, 8, 8, 8, 8, 4]
    assert [tuple(b[1].normalized_shape) for b in d.blocks] == [(8, s, s) for s in sizes]
    assert all(isinstance(b[2], nn.LeakyReLU) for b in d.blocks)
    assert d.fc1.out_features == 1 and d.fc10.out_features == 10


def test_features_are_the_layer_output_max_pooled():
    torch.manual_seed(0)
    d = Discriminator(width=8).eval()
    x = torch.randn(2, 3, 32, 32)
    h = x
    for k, block in enumerate(d.blocks, 1):
        h = block(h)
        assert torch.allclose(d.features(x, k), h.amax(dim=(2, 3)))
    # The 4x4 pool over conv8's 4x4 map is the layer-8 feature vector the heads read.
    critic, logits = d(x)
    f8 = d.features(x, 8)
    assert torch.allclose(logits, d.fc10(f8), atol=1e-6)
    assert torch.allclose(critic, d.fc1(f8).squeeze(1), atol=1e-6)
    with pytest.raises(ValueError):
        d.features(x, 9)


def test_discriminator_samples_are_independent():
    """LayerNorm (not BatchNorm): one image's outputs do not depend on the rest of the batch."""
    torch.manual_seed(0)
    d = Discriminator(width=8).train()
    x = torch.randn(4, 3, 32, 32)
    alone = d(x[:1])
    together = d(x)
    assert torch.allclose(alone[0], together[0][:1], atol=1e-5)
    assert torch.allclose(alone[1], together[1][:1], atol=1e-5)


def test_receptive_field_and_sizes_in_the_layer_table():
    d = Discriminator(width=8)
    rows = {r["name"]: r for r in d.layer_specs()}
    assert rows["conv1"]["rf"] == 3 and rows["conv2"]["rf"] == 5
    assert rows["conv8"]["rf"] == 45  # as the assignment says
    # The table's sizes are the tensors' real sizes.
    x = torch.randn(1, 3, 32, 32)
    for k, block in enumerate(d.blocks, 1):
        assert rows[f"conv{k}"]["input"] == x.shape[-1]
        x = block(x)
        assert rows[f"conv{k}"]["output"] == x.shape[-1]
    assert rows["pool"]["output"] == 1


@pytest.mark.parametrize("width", [196, 16])
def test_generator_shapes_and_range(width):
    g = Generator(width=width)
    sizes = []
    hooks = [m.register_forward_hook(lambda m, i, o: sizes.append((i[0].shape[-1], o.shape[-1])))
             for m in g.modules() if isinstance(m, nn.ConvTranspose2d)]
    out = g(torch.randn(5, 100) * 10)
    assert out.shape == (5, 3, 32, 32)
    assert out.abs().max() <= 1.0  # tanh output
    assert sizes == [(4, 8), (8, 16), (16, 32)]
    for h in hooks:
        h.remove()
    specs = [r for r in g.layer_specs() if r["type"] == "convtranspose2d"]
    assert [(r["input"], r["output"], r["p"], r["k"], r["s"]) for r in specs] == \
        [(4, 8, 1, 4, 2), (8, 16, 1, 4, 2), (16, 32, 1, 4, 2)]


def test_generator_norms_and_activations():
    g = Generator(width=8)
    bns = [m for m in g.modules() if isinstance(m, nn.BatchNorm2d)]
    convs = [m for m in g.convs if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d))]
    assert len(convs) == 8 and len(bns) == 8  # after fc1 and conv1..conv7, not conv8
    assert convs[-1].out_channels == 3 and isinstance(g.convs[-1], nn.Conv2d)


def test_sizes_are_constructor_arguments():
    d = Discriminator(width=12, num_classes=5)
    assert d(torch.randn(2, 3, 32, 32))[1].shape == (2, 5)
    assert Generator(latent_dim=20, width=12)(torch.randn(2, 20)).shape == (2, 3, 32, 32)
    assert Discriminator(**d.build_args).build_args == d.build_args


# ----------------------------------------------------------------------------- every family

from models import ARCHITECTURES, discriminator, generator  # noqa: E402


def test_an_unknown_family_is_named_in_words():
    for build in (lambda: discriminator("ie535"), lambda: generator("ie535", 100)):
        with pytest.raises(ValueError, match="unknown family of networks 'ie535'"):
            build()


def _params(model):
    return sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("family", [f for f, fam in ARCHITECTURES.items() if fam.generator])
@pytest.mark.parametrize("channels,size", [(1, 28), (3, 32)])
def test_every_family_takes_its_datasets_shape(family, channels, size):
    g = generator(family, 96, 8 if family == "ie534" else None, channels, size).eval()
    d = discriminator(family, 8 if family == "ie534" else None, 10, channels, size)
    images = g(torch.randn(5, 96))
    assert images.shape == (5, channels, size, size)
    assert images.min() >= -1 and images.max() <= 1  # tanh
    score, logits = d(images)
    assert score.shape == (5,) and logits.shape == (5, 10)
    score, logits = discriminator(family, 8 if family == "ie534" else None, 0, channels, size)(
        images)
    assert score.shape == (5,) and logits is None  # no class head: an unconditional GAN
    for k in range(1, d.depth + 1):
        assert d.features(images, k).dim() == 2


def test_mlp_pair_is_seed_004s():
    """784-256-256-1 with LeakyReLU 0.01; noise-1024-1024-784 with ReLU and tanh."""
    d = discriminator("mlp", channels=1, image_size=28)
    g = generator("mlp", 96, channels=1, image_size=28)
    assert _params(d) == (784 * 256 + 256) + (256 * 256 + 256) + (256 + 1) == 267009
    assert _params(g) == (96 * 1024 + 1024) + (1024 * 1024 + 1024) + (1024 * 784 + 784)
    assert [m.negative_slope for m in d.modules() if isinstance(m, nn.LeakyReLU)] == [0.01] * 2
    assert isinstance(g.net[-1], nn.Tanh) and sum(isinstance(m, nn.ReLU) for m in g.net) == 2


def test_infogan_pair_is_seed_004s():
    """The TensorFlow-tutorial discriminator (conv 32 5x5, pool, conv 64 5x5, pool, fc 4x4x64,
    fc 1) and the InfoGAN generator (fc 1024, fc 7x7x128, deconv 64, deconv 1)."""
    d = discriminator("infogan", channels=1, image_size=28)
    g = generator("infogan", 96, channels=1, image_size=28)
    convs = (5 * 5 * 1 * 32 + 32) + (5 * 5 * 32 * 64 + 64)
    assert _params(d) == convs + (4 * 4 * 64 * 1024 + 1024) + (1024 + 1) == 1102721
    bn = lambda c: 2 * c  # noqa: E731  (weight and bias)
    assert _params(g) == ((96 * 1024 + 1024) + bn(1024) + (1024 * 7 * 7 * 128 + 7 * 7 * 128)
                          + bn(7 * 7 * 128) + (128 * 64 * 4 * 4 + 64) + bn(64)
                          + (64 * 1 * 4 * 4 + 1))
    x = torch.randn(2, 96)
    h = g.fc(x).view(-1, 128, 7, 7)
    assert g.convs[0](h).shape == (2, 64, 14, 14)  # 7 -> 14 -> 28, no crop at 28


def test_dcgan_pair_is_seed_003s():
    """No pooling, strided 4x4 convolutions, BatchNorm on all but the first discriminator layer,
    LeakyReLU 0.2, no bias in any convolution (the lesson's conv and deconv helpers); generator
    4 -> 8 -> 16 -> 32 with BatchNorm and ReLU, tanh."""
    d = discriminator("dcgan", channels=3, image_size=32)
    g = generator("dcgan", 100, channels=3, image_size=32)
    convs = [m for m in d.modules() if isinstance(m, nn.Conv2d)]
    assert [c.stride for c in convs] == [(2, 2)] * 3 and [c.kernel_size for c in convs] == \
        [(4, 4)] * 3
    assert not any(isinstance(m, nn.MaxPool2d) for m in d.modules())
    assert [c.bias is None for c in convs] == [True, True, True]  # the lesson's conv helper
    assert sum(isinstance(m, nn.BatchNorm2d) for m in d.modules()) == 2
    assert {m.negative_slope for m in d.modules() if isinstance(m, nn.LeakyReLU)} == {0.2}
    assert _params(d) == (3 * 32 * 16) + (32 * 64 * 16 + 2 * 64) + (64 * 128 * 16 + 2 * 128) \
        + (128 * 4 * 4 + 1)
    deconvs = [m for m in g.modules() if isinstance(m, nn.ConvTranspose2d)]
    assert [c.bias is None for c in deconvs] == [True, True, True]
    assert _params(g) == (100 * 2048 + 2048) + (128 * 64 * 16 + 2 * 64) + (64 * 32 * 16 + 2 * 32) \
        + (32 * 3 * 16)
    assert d.batch_statistics and not discriminator("ie534", 8).batch_statistics


def test_ie534_generator_crops_to_28():
    g = generator("ie534", 100, 8, 1, 28).eval()
    full = nn.Sequential(*list(g.convs))
    z = torch.randn(2, 100)
    h = torch.relu(g.bn0(g.fc1(z).view(-1, 8, 4, 4)))
    assert torch.equal(g(z), torch.tanh(full(h))[..., 2:30, 2:30])  # made at 32, centre kept


# ----------------------------------------------------------------------------- initialisation

def _bound_ratio(weight, bound):
    return weight.abs().max().item() / bound


def test_cs231n_initialisation_is_xavier_for_linear_and_transposed_convolutions():
    torch.manual_seed(0)
    D = discriminator("infogan", 32, 0, 1, 28)
    G = generator("infogan", 96, 32, 1, 28)
    conv = D.blocks[0][0]  # PyTorch's default: uniform with bound 1 / sqrt(fan_in), not Xavier
    fan_in, fan_out = 1 * 25, 32 * 25
    assert 0.9 < _bound_ratio(conv.weight, 1 / fan_in ** 0.5) <= 1
    assert _bound_ratio(conv.weight, (6 / (fan_in + fan_out)) ** 0.5) > 1.5
    for m in [m for m in list(D.modules()) + list(G.modules())
              if isinstance(m, (nn.Linear, nn.ConvTranspose2d))]:
        fan_in, fan_out = nn.init._calculate_fan_in_and_fan_out(m.weight)
        assert 0.9 < _bound_ratio(m.weight, (6 / (fan_in + fan_out)) ** 0.5) <= 1, m


@pytest.mark.parametrize("family", ["mlp", "ie534", "dcgan"])
def test_the_other_families_start_at_pytorchs_defaults(family):
    """CS231n's notebook applies initialize_weights to its DCGAN alone: the vanilla GAN and
    LSGAN (mlp) keep PyTorch's default, uniform with bound 1 / sqrt(fan_in) (well inside
    Xavier's sqrt(6 / (fan_in + fan_out)) for these layers); so do IE 534's and Udacity's,
    whose code sets nothing."""
    torch.manual_seed(0)
    channels, size = (1, 28) if family == "mlp" else (3, 32)
    width = {"mlp": 256, "ie534": 32, "dcgan": 32}[family]
    nets = (discriminator(family, width, 0, channels, size),
            generator(family, 96, width * (4 if family == "mlp" else 1), channels, size))
    checked = 0
    for m in [m for net in nets for m in net.modules()
              if isinstance(m, (nn.Linear, nn.Conv2d, nn.ConvTranspose2d))]:
        fan_in, _ = nn.init._calculate_fan_in_and_fan_out(m.weight)
        assert 0.9 < _bound_ratio(m.weight, 1 / fan_in ** 0.5) <= 1.0001, (family, m)
        checked += 1
    assert checked >= 5


# ------------------------------------------------------------ biases, batch norm and spectral norm

def test_udacitys_dcgan_convolutions_have_no_bias_and_its_recipe_keeps_the_last_batch():
    D, G = discriminator("dcgan", 32, 0, 3, 32), generator("dcgan", 100, 32, 3, 32)
    convs = [m for m in list(D.modules()) + list(G.modules())
             if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d))]
    assert len(convs) == 6 and all(m.bias is None for m in convs)
    assert D.fc1.bias is not None and G.fc.bias is not None  # the linear layers keep theirs
    a = train_gan.parse_args(["--recipe", "udacity-dcgan-svhn"])
    assert (a.epochs, a.drop_last, a.batch_size, a.lr, a.noise) == (50, "off", 128, 2e-4,
                                                                     "uniform")
    images = torch.zeros(73257, 3, 2, 2, dtype=torch.uint8)  # SVHN's training set size
    b = Batches(images, torch.zeros(73257, dtype=torch.long), 128, drop_last=False, min_last=2)
    assert len(b) == 573 and b.epoch_images == 73257
    sizes = [len(y) for _, y in b.epoch(0, start=571)]
    assert sizes == [128, 41]
    one_left = Batches(images[:129], torch.zeros(129, dtype=torch.long), 128, drop_last=False,
                       min_last=2)
    assert len(one_left) == 1  # a last batch of one image cannot train a BatchNorm


def test_the_lessons_mlp_is_layer_batch_norm_activation_without_bias_before_batch_norm():
    with_bn = discriminator("udacity-mlp", 256, 10, 1, 28, batch_norm=True)
    plain = discriminator("udacity-mlp", 256, 10, 1, 28, batch_norm=False)
    kinds = [[type(m).__name__ for m in block] for block in with_bn.blocks]
    assert kinds == [["Flatten", "Linear", "BatchNorm1d", "ReLU"], ["Linear", "BatchNorm1d",
                                                                      "ReLU"]]
    sizes = [(m.in_features, m.out_features) for m in with_bn.modules()
             if isinstance(m, nn.Linear)]
    assert sizes == [(784, 512), (512, 256), (256, 1), (256, 10)]
    assert all(block[-3].bias is None for block in with_bn.blocks)
    assert [type(m).__name__ for m in plain.blocks[1]] == ["Linear", "ReLU"]
    assert all(block[-2].bias is not None for block in plain.blocks)
    assert ARCHITECTURES["udacity-mlp"].generator is None  # a classifier, no generator
    # eval mode uses the population statistics: a single image is classified as in a batch
    x = torch.randn(32, 1, 28, 28)
    with_bn.train()
    with_bn(x)
    with_bn.eval()
    with torch.no_grad():
        assert torch.allclose(with_bn(x[:1])[1], with_bn(x)[1][:1], atol=1e-6)


def test_spectral_norm_bounds_every_layer_of_every_family():
    for family, channels, size in (("ie534", 3, 32), ("dcgan", 3, 32), ("mlp", 1, 28),
                                   ("infogan", 1, 28)):
        torch.manual_seed(0)
        d = discriminator(family, 8, 10, channels, size, spectral_norm=True).train()
        for _ in range(30):  # power iterations, one per forward pass in training
            d(torch.randn(4, channels, size, size))
        layers = [m for m in d.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
        assert layers and all(hasattr(m, "parametrizations") for m in layers), family
        for m in layers:
            sigma = torch.linalg.matrix_norm(m.weight.detach().flatten(1), ord=2)
            assert 0.9 < sigma < 1.1, (family, m, sigma)
