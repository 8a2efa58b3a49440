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
