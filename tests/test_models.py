import pytest
import torch
import torch.nn as nn

from models import Discriminator, Generator


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
    assert Discriminator(**d.arch).arch == d.arch


# ----------------------------------------------------------------------------- every family

from models import ARCHITECTURES, discriminator, generator  # noqa: E402


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
