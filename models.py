"""The assignment's networks (IE 534, "Understanding CNNs and GANs", seed 002).

    python models.py               # print both layer tables at width 196
    python models.py --width 128   # the assignment's cheaper option

Discriminator: eight 3x3 convolutions, each followed by LayerNorm over (C, H, W) and
LeakyReLU, a 4x4 max-pool and two heads on the pooled features: `fc1` (the WGAN critic,
one score) and `fc10` (the ACGAN auxiliary classifier). Generator: a linear layer to a
4x4 map, then convolutions and three 4x4 stride-2 transposed convolutions (4 -> 8 -> 16 ->
32), BatchNorm and ReLU after every layer but the last, tanh output in [-1, 1].

Only nn.Modules live here; sizes are constructor arguments.
"""
import argparse

import torch
import torch.nn as nn

# (kernel, stride) of conv1..conv8 of the discriminator; padding is 1 everywhere.
DISC_LAYERS = ((3, 1), (3, 2), (3, 1), (3, 2), (3, 1), (3, 1), (3, 1), (3, 2))
# Generator conv1..conv8: True marks a 4x4 stride-2 transposed convolution (padding 1).
GEN_UPSAMPLE = (True, False, False, False, True, False, True, False)


class FloatLayerNorm(nn.LayerNorm):
    """LayerNorm computed in fp32 under autocast on any device. CUDA's autocast does this by
    itself; the CPU's would keep a bf16 input in bf16, which moves the critic's input
    gradients, and so the gradient penalty, by several percent."""

    def forward(self, x):
        return super().forward(x.float())


class Discriminator(nn.Module):
    """The critic/classifier of the assignment's table.

    forward(x) -> (critic score (B,), class logits (B, num_classes)) for x of shape (B, C, S, S)
    in [-1, 1]. features(x, layer) -> (B, width): the output of conv`layer` (1..8) after its
    LayerNorm and LeakyReLU, max-pooled over space.
    """

    def __init__(self, width=196, num_classes=10, in_channels=3, image_size=32,
                 negative_slope=0.01):
        super().__init__()
        if width < 1 or num_classes < 1 or image_size < 8:
            raise ValueError("width and num_classes must be >= 1 and image_size >= 8")
        # The constructor's arguments: saved with the weights so a file can rebuild its model.
        self.arch = dict(width=width, num_classes=num_classes, in_channels=in_channels,
                         image_size=image_size, negative_slope=negative_slope)
        self.width, self.num_classes = width, num_classes
        self.in_channels, self.image_size = in_channels, image_size
        blocks, size, channels = [], image_size, in_channels
        for kernel, stride in DISC_LAYERS:
            size = (size + 2 - kernel) // stride + 1
            blocks.append(nn.Sequential(
                nn.Conv2d(channels, width, kernel, stride, padding=1),
                FloatLayerNorm([width, size, size]),  # per sample: keeps the GP valid
                nn.LeakyReLU(negative_slope),
            ))
            channels = width
        self.blocks = nn.ModuleList(blocks)
        self.pool = nn.MaxPool2d(size, size)  # 4x4 -> 1x1 at image_size 32
        self.fc1 = nn.Linear(width, 1)
        self.fc10 = nn.Linear(width, num_classes)

    @property
    def depth(self):
        """How many layers features() can read (1..depth)."""
        return len(self.blocks)

    def layer_specs(self):
        """The layer table: one dict per layer with its sizes and receptive field on the input."""
        rows, size, rf, jump = [], self.image_size, 1, 1
        for i, block in enumerate(self.blocks, 1):
            conv = block[0]
            (k,), (s,), (p,) = conv.kernel_size[:1], conv.stride[:1], conv.padding[:1]
            out = (size + 2 * p - k) // s + 1
            rf, jump = rf + (k - 1) * jump, jump * s
            rows.append(dict(name=f"conv{i}", type="conv2d", cin=conv.in_channels,
                             cout=conv.out_channels, k=k, s=s, p=p, input=size, output=out, rf=rf))
            size = out
        k = self.pool.kernel_size
        rows.append(dict(name="pool", type="max2d", cin=self.width, cout=self.width, k=k, s=k,
                         p=0, input=size, output=size // k, rf=rf + (k - 1) * jump))
        for name in ("fc1", "fc10"):
            fc = getattr(self, name)
            rows.append(dict(name=name, type="linear", cin=fc.in_features, cout=fc.out_features))
        return rows

    def features(self, x, layer):
        if not 1 <= layer <= len(self.blocks):
            raise ValueError(f"layer must be 1..{len(self.blocks)}, got {layer}")
        for block in self.blocks[:layer]:
            x = block(x)
        return x.amax(dim=(2, 3))  # (B, width, h, w) -> (B, width)

    def forward(self, x):
        for block in self.blocks:
            x = block(x)
        h = self.pool(x).flatten(1)  # (B, width, 4, 4) -> (B, width)
        return self.fc1(h).squeeze(1), self.fc10(h)


class Generator(nn.Module):
    """The generator of the assignment's table: noise (B, latent_dim) -> images (B, C, 32, 32)."""

    def __init__(self, latent_dim=100, width=196, out_channels=3, base_size=4):
        super().__init__()
        if width < 1 or latent_dim < 1:
            raise ValueError("width and latent_dim must be >= 1")
        self.arch = dict(latent_dim=latent_dim, width=width, out_channels=out_channels,
                         base_size=base_size)
        self.latent_dim, self.width = latent_dim, width
        self.out_channels, self.base_size = out_channels, base_size
        self.fc1 = nn.Linear(latent_dim, width * base_size * base_size)
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

    @property
    def image_size(self):
        return self.base_size * 2 ** sum(GEN_UPSAMPLE)

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
                out, kind = (size + 2 * p - k) // s + 1, "conv2d"
            rows.append(dict(name=f"conv{i}", type=kind, cin=conv.in_channels,
                             cout=conv.out_channels, k=k, s=s, p=p, input=size, output=out))
            size = out
        return rows

    def forward(self, z):
        h = self.fc1(z).view(-1, self.width, self.base_size, self.base_size)  # (B, W, 4, 4)
        h = torch.relu(self.bn0(h))
        return torch.tanh(self.convs(h))  # (B, W, 4, 4) -> (B, C, 32, 32)


# Architectures by name, as model files record them.
ARCHITECTURES = {"discriminator": Discriminator, "generator": Generator}


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
    parser = argparse.ArgumentParser(description="Print the layer tables of the networks.")
    parser.add_argument("--width", type=int, default=196, help="channels of every hidden layer")
    parser.add_argument("--num_classes", type=int, default=10, help="outputs of fc10")
    args = parser.parse_args(argv)
    disc, gen = Discriminator(args.width, args.num_classes), Generator(width=args.width)
    for title, model in (("Discriminator", disc), ("Generator", gen)):
        params = sum(p.numel() for p in model.parameters())
        print(f"{title} (width {args.width}, {params:,} parameters)")
        print(format_table(model.layer_specs()) + "\n")


if __name__ == "__main__":
    main()
