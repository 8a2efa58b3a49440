"""The networks, by family: each family a discriminator and a generator, looked up by name in
ARCHITECTURES. Only nn.Modules live here; sizes are constructor arguments.

    python models.py                     # the assignment's tables at width 196
    python models.py --arch infogan --image_size 28 --channels 1

ie534    the assignment (seed 002): eight 3x3 convolutions with LayerNorm and LeakyReLU, a
         max-pool and two heads (`fc1` the critic, `fc10` ACGAN's classifier); the generator
         from a 4x4 map through convolutions and 4x4 stride-2 transposed ones to 32x32.
dcgan    seed 003 (Udacity's DCGAN): strided 4x4 convolutions, BatchNorm on all but the first
         discriminator layer, LeakyReLU 0.2, transposed convolutions up from 4x4, tanh; no
         convolution has a bias (the lesson's helpers).
udacity-mlp  seed 003's batch-normalization lesson: a classifier only, 784-512-256, ReLU, with
         BatchNorm (batch_norm=True) or without.
mlp      seed 004 (CS231n's vanilla GAN): 784-256-256-1, LeakyReLU 0.01; noise-1024-1024-784.
infogan  seed 004 (CS231n's DCGAN): TensorFlow's MNIST tutorial network and the InfoGAN
         generator (Chen et al. 2016, appendix C.1).
Each family starts as its lesson's code does: infogan as CS231n's initialize_weights sets it
(xavier_init), which the notebook applies to its DCGAN alone; every other at PyTorch's defaults.

Every discriminator returns (score (B,), class logits (B, num_classes) or None); features(x,
k) is its k-th block's output, max-pooled over space; spectral_norm=True (discriminator())
puts spectral normalisation on every convolution and linear layer of any family (SNGAN).
Every generator maps noise (B, latent_dim) to images (B, C, S, S) in [-1, 1], cropping the
centre when its natural size is larger (32 for 28x28 MNIST).
"""
import argparse
import math

import torch
import torch.nn as nn

# (kernel, stride) of conv1..conv8 of the discriminator; padding is 1 everywhere.
DISC_LAYERS = ((3, 1), (3, 2), (3, 1), (3, 2), (3, 1), (3, 1), (3, 1), (3, 2))
# Generator conv1..conv8: True marks a 4x4 stride-2 transposed convolution (padding 1).
GEN_UPSAMPLE = (True, False, False, False, True, False, True, False)


class FloatLayerNorm(nn.LayerNorm):
    """LayerNorm in fp32 under autocast on any device, as CUDA's autocast does by itself (the
    CPU's kept bf16, which moved the gradient penalty by several percent)."""

    def forward(self, x):
        return super().forward(x.float())


def _conv_out(size, kernel, stride, padding):
    return (size + 2 * padding - kernel) // stride + 1


def xavier_init(module):
    """CS231n's initialize_weights (seed 004), which its notebook gives its DCGAN alone:
    Xavier-uniform linear and transposed-convolution weights; the convolutions and every bias
    keep PyTorch's default (Kaiming-uniform with a = sqrt(5): bound 1 / sqrt(fan_in))."""
    for m in module.modules():
        if isinstance(m, (nn.Linear, nn.ConvTranspose2d)):
            nn.init.xavier_uniform_(m.weight)


def center_crop(x, size):
    """(B, C, S, S) -> (B, C, size, size), the centre; nothing to do when S == size."""
    offset = (x.shape[-1] - size) // 2
    return x if offset == 0 else x[..., offset:offset + size, offset:offset + size]


class Critic(nn.Module):
    """What every discriminator shares: `blocks` run in order, trunk() turns the last block's
    output into the feature vector the heads read, `fc1` scores it and `fc10` (when
    num_classes > 0) classifies it."""
    family = role = None  # set by each subclass: its name in ARCHITECTURES, "discriminator"
    batch_statistics = False  # True when a BatchNorm mixes the samples of a batch

    def _heads(self, features, num_classes):
        self.num_classes = num_classes
        self.fc1 = nn.Linear(features, 1)
        self.fc10 = nn.Linear(features, num_classes) if num_classes else None

    @property
    def depth(self):
        """How many blocks features() can read (1..depth)."""
        return len(self.blocks)

    def features(self, x, layer):
        """The output of block `layer` (1..depth), max-pooled over space: (B, channels)."""
        if not 1 <= layer <= self.depth:
            raise ValueError(f"layer must be 1..{self.depth}, got {layer}")
        for block in self.blocks[:layer]:
            x = block(x)
        return x.amax(dim=(2, 3)) if x.dim() == 4 else x  # (B, C, h, w) -> (B, C)

    def trunk(self, h):
        return h.flatten(1)

    def embed(self, x):
        """The representation the heads read: (B, C, S, S) -> (B, features)."""
        for block in self.blocks:
            x = block(x)
        return self.trunk(x)

    def forward(self, x):
        h = self.embed(x)
        return self.fc1(h).squeeze(1), (self.fc10(h) if self.fc10 is not None else None)


class Discriminator(Critic):
    """The critic/classifier of the assignment's table (family ie534); features(x, layer) is
    conv`layer` (1..8) after its LayerNorm and LeakyReLU, max-pooled over space: (B, width)."""
    family, role = "ie534", "discriminator"

    def __init__(self, width=196, num_classes=10, in_channels=3, image_size=32,
                 negative_slope=0.01):
        super().__init__()
        if width < 1 or num_classes < 0 or image_size < 8:
            raise ValueError("width must be >= 1, num_classes >= 0 and image_size >= 8")
        # The constructor's arguments: saved with the weights so a file can rebuild its model.
        self.arch = dict(width=width, num_classes=num_classes, in_channels=in_channels,
                         image_size=image_size, negative_slope=negative_slope)
        self.width, self.in_channels, self.image_size = width, in_channels, image_size
        blocks, size, channels = [], image_size, in_channels
        for kernel, stride in DISC_LAYERS:
            size = _conv_out(size, kernel, stride, 1)
            blocks.append(nn.Sequential(
                nn.Conv2d(channels, width, kernel, stride, padding=1),
                FloatLayerNorm([width, size, size]),  # per sample: keeps the GP valid
                nn.LeakyReLU(negative_slope),
            ))
            channels = width
        self.blocks = nn.ModuleList(blocks)
        self.pool = nn.MaxPool2d(size, size)  # 4x4 -> 1x1 at image_size 32
        self._heads(width, num_classes)

    def trunk(self, h):
        return self.pool(h).flatten(1)  # (B, width, 4, 4) -> (B, width)

    def layer_specs(self):
        """The layer table: one dict per layer with its sizes and receptive field on the input."""
        rows, size, rf, jump = [], self.image_size, 1, 1
        for i, block in enumerate(self.blocks, 1):
            conv = block[0]
            (k,), (s,), (p,) = conv.kernel_size[:1], conv.stride[:1], conv.padding[:1]
            out = _conv_out(size, k, s, p)
            rf, jump = rf + (k - 1) * jump, jump * s
            rows.append(dict(name=f"conv{i}", type="conv2d", cin=conv.in_channels,
                             cout=conv.out_channels, k=k, s=s, p=p, input=size, output=out, rf=rf))
            size = out
        k = self.pool.kernel_size
        rows.append(dict(name="pool", type="max2d", cin=self.width, cout=self.width, k=k, s=k,
                         p=0, input=size, output=size // k, rf=rf + (k - 1) * jump))
        for name in ("fc1", "fc10"):
            fc = getattr(self, name)
            if fc is not None:
                rows.append(dict(name=name, type="linear", cin=fc.in_features,
                                 cout=fc.out_features))
        return rows


class Generator(nn.Module):
    """The generator of the assignment's table (family ie534): noise (B, latent_dim) -> images
    (B, C, S, S), made at 8 * ceil(S / 8) and cropped to S."""
    family, role = "ie534", "generator"

    def __init__(self, latent_dim=100, width=196, out_channels=3, image_size=32):
        super().__init__()
        if width < 1 or latent_dim < 1 or image_size < 8:
            raise ValueError("width and latent_dim must be >= 1 and image_size >= 8")
        self.arch = dict(latent_dim=latent_dim, width=width, out_channels=out_channels,
                         image_size=image_size)
        self.latent_dim, self.width = latent_dim, width
        self.out_channels, self.image_size = out_channels, image_size
        self.base_size = math.ceil(image_size / 2 ** sum(GEN_UPSAMPLE))
        self.fc1 = nn.Linear(latent_dim, width * self.base_size ** 2)
        self.bn0 = nn.BatchNorm2d(width)
        layers = []
        for i, upsample in enumerate(GEN_UPSAMPLE):
            last = i == len(GEN_UPSAMPLE) - 1
            out = out_channels if last else width
            conv = (nn.ConvTranspose2d(width, out, 4, 2, padding=1) if upsample
                    else nn.Conv2d(width, out, 3, 1, padding=1))
            layers.append(conv)
            if not last:
                layers += [nn.BatchNorm2d(width), nn.ReLU(inplace=True)]
        self.convs = nn.Sequential(*layers)

    def layer_specs(self):
        """The layer table: one dict per layer with its input and output sizes."""
        rows = [dict(name="fc1", type="linear", cin=self.latent_dim,
                     cout=self.fc1.out_features)]
        convs = [m for m in self.convs if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d))]
        size = self.base_size
        for i, conv in enumerate(convs, 1):
            (k,), (s,), (p,) = conv.kernel_size[:1], conv.stride[:1], conv.padding[:1]
            if isinstance(conv, nn.ConvTranspose2d):
                out, kind = (size - 1) * s - 2 * p + k, "convtranspose2d"
            else:
                out, kind = _conv_out(size, k, s, p), "conv2d"
            rows.append(dict(name=f"conv{i}", type=kind, cin=conv.in_channels,
                             cout=conv.out_channels, k=k, s=s, p=p, input=size, output=out))
            size = out
        return rows

    def forward(self, z):
        h = self.fc1(z).view(-1, self.width, self.base_size, self.base_size)  # (B, W, 4, 4)
        h = torch.relu(self.bn0(h))
        return center_crop(torch.tanh(self.convs(h)), self.image_size)  # -> (B, C, S, S)


# ----------------------------------------------------------------------------- dcgan (seed 003)

class DCGANDiscriminator(Critic):
    """Three 4x4 stride-2 convolutions (width, 2 width, 4 width channels), BatchNorm on all but
    the first, LeakyReLU 0.2, then the heads on the flattened map; no pooling. No convolution
    has a bias, the first included (the lesson's conv helper); the heads have theirs."""
    family, role = "dcgan", "discriminator"
    batch_statistics = True

    def __init__(self, width=32, num_classes=0, in_channels=3, image_size=32):
        super().__init__()
        self.arch = dict(width=width, num_classes=num_classes, in_channels=in_channels,
                         image_size=image_size)
        blocks, size, cin = [], image_size, in_channels
        for i, cout in enumerate((width, 2 * width, 4 * width)):
            norm = i > 0  # "BatchNorm everywhere but the first layer"
            layers = [nn.Conv2d(cin, cout, 4, 2, 1, bias=False)]  # the lesson's conv helper
            layers += [nn.BatchNorm2d(cout)] if norm else []
            blocks.append(nn.Sequential(*layers, nn.LeakyReLU(0.2)))
            size, cin = _conv_out(size, 4, 2, 1), cout
        self.blocks = nn.ModuleList(blocks)
        self._heads(cin * size * size, num_classes)  # 4 width x 4 x 4 at 32x32


class DCGANGenerator(nn.Module):
    """A linear layer reshaped to a 4 width x 4 x 4 map, then 4x4 stride-2 transposed
    convolutions (4 width -> 2 width -> width -> channels; 4 -> 8 -> 16 -> 32), BatchNorm and
    ReLU after all but the last, tanh. As in the lesson's code, the linear layer's output goes
    to the first transposed convolution as it is, and no transposed convolution has a bias,
    the last included (the lesson's deconv helper)."""
    family, role = "dcgan", "generator"

    def __init__(self, latent_dim=100, width=32, out_channels=3, image_size=32):
        super().__init__()
        self.arch = dict(latent_dim=latent_dim, width=width, out_channels=out_channels,
                         image_size=image_size)
        self.latent_dim, self.image_size, self.width = latent_dim, image_size, width
        self.base_size = math.ceil(image_size / 8)
        self.fc = nn.Linear(latent_dim, 4 * width * self.base_size ** 2)
        layers = []
        for cin, cout in ((4 * width, 2 * width), (2 * width, width)):
            layers += [nn.ConvTranspose2d(cin, cout, 4, 2, 1, bias=False), nn.BatchNorm2d(cout),
                       nn.ReLU(inplace=True)]
        layers.append(nn.ConvTranspose2d(width, out_channels, 4, 2, 1, bias=False))
        self.convs = nn.Sequential(*layers)

    def forward(self, z):
        h = self.fc(z).view(-1, 4 * self.width, self.base_size, self.base_size)
        return center_crop(torch.tanh(self.convs(h)), self.image_size)


# ----------------------------------------------------------------------------- mlp (seed 004)

class MLPDiscriminator(Critic):
    """Flatten, then fully connected C*S*S -> width -> width -> 1 (784-256-256-1 on MNIST)
    with LeakyReLU 0.01."""
    family, role = "mlp", "discriminator"

    def __init__(self, width=256, num_classes=0, in_channels=1, image_size=28):
        super().__init__()
        self.arch = dict(width=width, num_classes=num_classes, in_channels=in_channels,
                         image_size=image_size)
        self.blocks = nn.ModuleList([
            nn.Sequential(nn.Flatten(), nn.Linear(in_channels * image_size ** 2, width),
                          nn.LeakyReLU(0.01)),
            nn.Sequential(nn.Linear(width, width), nn.LeakyReLU(0.01)),
        ])
        self._heads(width, num_classes)  # PyTorch's default initialisation, as the notebook's


class MLPGenerator(nn.Module):
    """Fully connected noise -> width -> width -> C*S*S (96-1024-1024-784 on MNIST), ReLU,
    tanh, reshaped to an image."""
    family, role = "mlp", "generator"

    def __init__(self, latent_dim=96, width=1024, out_channels=1, image_size=28):
        super().__init__()
        self.arch = dict(latent_dim=latent_dim, width=width, out_channels=out_channels,
                         image_size=image_size)
        self.latent_dim, self.image_size = latent_dim, image_size
        self.shape = (out_channels, image_size, image_size)
        self.net = nn.Sequential(
            nn.Linear(latent_dim, width), nn.ReLU(inplace=True),
            nn.Linear(width, width), nn.ReLU(inplace=True),
            nn.Linear(width, out_channels * image_size ** 2), nn.Tanh())  # default init

    def forward(self, z):
        return self.net(z).view(-1, *self.shape)  # (B, C*S*S) -> (B, C, S, S)


# ----------------------------------------------------------------------------- infogan (seed 004)

class ConvDiscriminator(Critic):
    """TensorFlow's MNIST tutorial network: 5x5 convolutions of width and 2 width channels,
    each with LeakyReLU 0.01 and a 2x2 max-pool, then fully connected to 32 width (4x4x64 =
    1024 at width 32) with LeakyReLU 0.01, and the heads."""
    family, role = "infogan", "discriminator"

    def __init__(self, width=32, num_classes=0, in_channels=1, image_size=28):
        super().__init__()
        self.arch = dict(width=width, num_classes=num_classes, in_channels=in_channels,
                         image_size=image_size)
        size = image_size
        for _ in range(2):
            size = _conv_out(size, 5, 1, 0) // 2  # a valid 5x5 convolution, then the pool
        if size < 1:
            raise ValueError(f"image_size {image_size} is too small for two 5x5 convolutions")
        self.blocks = nn.ModuleList([
            nn.Sequential(nn.Conv2d(in_channels, width, 5), nn.LeakyReLU(0.01),
                          nn.MaxPool2d(2, 2)),
            nn.Sequential(nn.Conv2d(width, 2 * width, 5), nn.LeakyReLU(0.01),
                          nn.MaxPool2d(2, 2)),
            nn.Sequential(nn.Flatten(), nn.Linear(2 * width * size * size, 32 * width),
                          nn.LeakyReLU(0.01)),
        ])
        self._heads(32 * width, num_classes)
        xavier_init(self)


class InfoGANGenerator(nn.Module):
    """InfoGAN's MNIST generator: fully connected to 32 width (1024) with ReLU and BatchNorm,
    fully connected to 4 width x 7 x 7 (128 channels) with ReLU and BatchNorm, then 4x4
    stride-2 transposed convolutions to 2 width channels (ReLU, BatchNorm) and to the image
    (tanh): 7 -> 14 -> 28. The seed's order, ReLU before BatchNorm, is kept."""
    family, role = "infogan", "generator"

    def __init__(self, latent_dim=96, width=32, out_channels=1, image_size=28):
        super().__init__()
        self.arch = dict(latent_dim=latent_dim, width=width, out_channels=out_channels,
                         image_size=image_size)
        self.latent_dim, self.image_size, self.width = latent_dim, image_size, width
        self.base_size = math.ceil(image_size / 4)
        self.fc = nn.Sequential(
            nn.Linear(latent_dim, 32 * width), nn.ReLU(inplace=True), nn.BatchNorm1d(32 * width),
            nn.Linear(32 * width, 4 * width * self.base_size ** 2), nn.ReLU(inplace=True),
            nn.BatchNorm1d(4 * width * self.base_size ** 2))
        self.convs = nn.Sequential(
            nn.ConvTranspose2d(4 * width, 2 * width, 4, 2, 1), nn.ReLU(inplace=True),
            nn.BatchNorm2d(2 * width),
            nn.ConvTranspose2d(2 * width, out_channels, 4, 2, 1), nn.Tanh())
        xavier_init(self)

    def forward(self, z):
        h = self.fc(z).view(-1, 4 * self.width, self.base_size, self.base_size)
        return center_crop(self.convs(h), self.image_size)


# ------------------------------------------------------------------------- udacity-mlp (seed 003)

class LessonMLP(Critic):
    """The batch-normalization lesson's classifier (seed 003): flatten, then linear layers to
    2 width and width values (784-512-256 on MNIST), each followed by BatchNorm when batch_norm
    is on, then ReLU (layer > batch norm > activation; a linear layer a BatchNorm follows has
    no bias), and the heads (fc10: width -> classes, no BatchNorm)."""
    family, role = "udacity-mlp", "discriminator"

    def __init__(self, width=256, num_classes=10, in_channels=1, image_size=28,
                 batch_norm=True):
        super().__init__()
        self.arch = dict(width=width, num_classes=num_classes, in_channels=in_channels,
                         image_size=image_size, batch_norm=batch_norm)
        self.batch_statistics = batch_norm
        blocks, cin = [], in_channels * image_size ** 2
        for i, cout in enumerate((2 * width, width)):
            layers = [nn.Flatten()] if i == 0 else []
            layers.append(nn.Linear(cin, cout, bias=not batch_norm))
            layers += [nn.BatchNorm1d(cout)] if batch_norm else []
            blocks.append(nn.Sequential(*layers, nn.ReLU()))
            cin = cout
        self.blocks = nn.ModuleList(blocks)
        self._heads(width, num_classes)


# ----------------------------------------------------------------------------- SimCLR (seed 004)

class ProjectionHead(nn.Module):
    """SimCLR's g as seed 004's code: linear without bias, BatchNorm, ReLU, linear."""

    def __init__(self, in_features, hidden=None, out_features=128):
        super().__init__()
        hidden = hidden or in_features
        self.net = nn.Sequential(nn.Linear(in_features, hidden, bias=False),
                                 nn.BatchNorm1d(hidden), nn.ReLU(inplace=True),
                                 nn.Linear(hidden, out_features))

    def forward(self, h):
        return self.net(h)


class SimCLRNet(nn.Module):
    """SimCLR's encoder f (a discriminator's trunk: its blocks and pooling, the heads unused)
    followed by the projection head g: images (B, C, S, S) -> z (B, out_features)."""

    def __init__(self, encoder, head):
        super().__init__()
        self.encoder, self.head = encoder, head

    def forward(self, x):
        return self.head(self.encoder.embed(x))


# Families by name: (discriminator, generator, the width when none is given, how much wider
# the generator is). mlp's 256 and 4 x 256 = 1024 are the seed's hidden sizes.
ARCHITECTURES = {
    "ie534": (Discriminator, Generator, 196, 1),
    "dcgan": (DCGANDiscriminator, DCGANGenerator, 32, 1),
    "mlp": (MLPDiscriminator, MLPGenerator, 256, 4),
    "infogan": (ConvDiscriminator, InfoGANGenerator, 32, 1),
    "udacity-mlp": (LessonMLP, None, 256, 1),  # a classifier: no generator
}
ROLES = ("discriminator", "generator")


def build(family, role, spectral_norm=False, **arch):
    """A network by family name and role ('discriminator' or 'generator'), from the
    constructor arguments a model file records."""
    model = ARCHITECTURES[family][ROLES.index(role)](**arch)
    return with_spectral_norm(model) if spectral_norm else model


def with_spectral_norm(model):
    """Spectral normalisation (Miyato et al. 2018) on every convolution and linear layer of a
    discriminator; its power-iteration vectors are buffers, so they are saved and resumed."""
    for m in list(model.modules()):
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            nn.utils.parametrizations.spectral_norm(m)
    model.arch["spectral_norm"] = True
    return model


def default_width(family):
    return ARCHITECTURES[family][2]


def discriminator(family, width=None, num_classes=0, channels=3, image_size=32,
                  spectral_norm=False, **options):
    """The family's discriminator for images (channels, image_size, image_size); options are
    the family's own constructor arguments (udacity-mlp: batch_norm)."""
    d, _, default, _ = ARCHITECTURES[family]
    return build(family, "discriminator", spectral_norm, width=width or default,
                 num_classes=num_classes, in_channels=channels, image_size=image_size, **options)


def generator(family, latent_dim, width=None, channels=3, image_size=32):
    """The family's generator of images (channels, image_size, image_size)."""
    _, g, default, wider = ARCHITECTURES[family]
    if g is None:
        raise ValueError(f"the {family} family is a classifier: it has no generator")
    return g(latent_dim=latent_dim, width=wider * (width or default), out_channels=channels,
             image_size=image_size)


def format_table(rows):
    """The layer table as aligned text, in the assignment's column order."""
    cols = ("name", "type", "cin", "cout", "k", "p", "s", "input", "output", "rf")
    heads = ("name", "type", "input_channels", "output_channels", "ksize", "padding", "stride",
             "input", "output", "receptive_field")

    def cell(row, col):
        v = row.get(col, "")
        return f"{v}x{v}" if col in ("input", "output", "rf") and v != "" else str(v)

    table = [heads] + [tuple(cell(r, c) for c in cols) for r in rows]
    widths = [max(len(line[i]) for line in table) for i in range(len(cols))]
    return "\n".join("  ".join(v.ljust(w) for v, w in zip(line, widths)).rstrip() for line in table)


def main(argv=None):
    parser = argparse.ArgumentParser(description="Print the networks of a family.")
    parser.add_argument("--arch", choices=tuple(ARCHITECTURES), default="ie534",
                        help="the family of networks")
    parser.add_argument("--width", type=int, default=None,
                        help="its width (default the family's: ie534 196, dcgan and infogan 32, "
                             "mlp and udacity-mlp 256; mlp's generator is 4 times as wide)")
    parser.add_argument("--num_classes", type=int, default=10, help="outputs of fc10")
    parser.add_argument("--latent_dim", type=int, default=100, help="noise values")
    parser.add_argument("--image_size", type=int, default=32, help="image side in pixels")
    parser.add_argument("--channels", type=int, default=3, help="image channels")
    args = parser.parse_args(argv)
    nets = [("Discriminator", discriminator(args.arch, args.width, args.num_classes,
                                            args.channels, args.image_size))]
    if ARCHITECTURES[args.arch][1] is not None:
        nets.append(("Generator", generator(args.arch, args.latent_dim, args.width,
                                            args.channels, args.image_size)))
    for title, model in nets:
        params = sum(p.numel() for p in model.parameters())
        print(f"{title} ({args.arch}, {params:,} parameters)")
        print(format_table(model.layer_specs()) if hasattr(model, "layer_specs") else model)
        print()


if __name__ == "__main__":
    main()
