"""The assignment's networks (IE 534, seed 002), family ie534, as its tables give them;
`python models.py` prints both tables."""
import math

import torch
import torch.nn as nn

from nets.base import Critic, FloatLayerNorm, _conv_out, center_crop

# (kernel, stride) of conv1..conv8 of the discriminator; padding is 1 everywhere.
DISC_LAYERS = ((3, 1), (3, 2), (3, 1), (3, 2), (3, 1), (3, 1), (3, 1), (3, 2))
# Generator conv1..conv8: True marks a 4x4 stride-2 transposed convolution (padding 1).
GEN_UPSAMPLE = (True, False, False, False, True, False, True, False)


def _conv_rows(convs, size):
    """The layer table's rows of conv1, conv2, ... (plain or transposed) from maps of side size."""
    rows = []
    for i, conv in enumerate(convs, 1):
        (k,), (s,), (p,) = conv.kernel_size[:1], conv.stride[:1], conv.padding[:1]
        if isinstance(conv, nn.ConvTranspose2d):
            out, kind = (size - 1) * s - 2 * p + k, "convtranspose2d"
        else:
            out, kind = _conv_out(size, k, s, p), "conv2d"
        rows.append(dict(name=f"conv{i}", type=kind, cin=conv.in_channels, cout=conv.out_channels,
                         k=k, s=s, p=p, input=size, output=out))
        size = out
    return rows


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
        self.build_args = dict(width=width, num_classes=num_classes, in_channels=in_channels,
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
        rows, rf, jump = _conv_rows([block[0] for block in self.blocks], self.image_size), 1, 1
        for row in rows:
            rf, jump = rf + (row["k"] - 1) * jump, jump * row["s"]
            row["rf"] = rf
        size, k = rows[-1]["output"], self.pool.kernel_size
        rows.append(dict(name="pool", type="max2d", cin=self.width, cout=self.width, k=k, s=k,
                         p=0, input=size, output=size // k, rf=rf + (k - 1) * jump))
        return rows + [dict(name=name, type="linear", cin=fc.in_features, cout=fc.out_features)
                       for name, fc in (("fc1", self.fc1), ("fc10", self.fc10)) if fc is not None]


class Generator(nn.Module):
    """The generator of the assignment's table (family ie534): noise (B, latent_dim) -> images
    (B, C, S, S), made at 8 * ceil(S / 8) and cropped to S."""
    family, role = "ie534", "generator"

    def __init__(self, latent_dim=100, width=196, out_channels=3, image_size=32):
        super().__init__()
        if width < 1 or latent_dim < 1 or image_size < 8:
            raise ValueError("width and latent_dim must be >= 1 and image_size >= 8")
        self.build_args = dict(latent_dim=latent_dim, width=width, out_channels=out_channels,
                               image_size=image_size)
        self.latent_dim, self.width, self.image_size = latent_dim, width, image_size
        self.base_size = math.ceil(image_size / 2 ** sum(GEN_UPSAMPLE))
        self.fc1 = nn.Linear(latent_dim, width * self.base_size ** 2)
        self.bn0 = nn.BatchNorm2d(width)
        layers = []
        for i, upsample in enumerate(GEN_UPSAMPLE):
            last = i == len(GEN_UPSAMPLE) - 1
            out = out_channels if last else width
            layers.append(nn.ConvTranspose2d(width, out, 4, 2, padding=1) if upsample
                          else nn.Conv2d(width, out, 3, 1, padding=1))
            if not last:
                layers += [nn.BatchNorm2d(width), nn.ReLU(inplace=True)]
        self.convs = nn.Sequential(*layers)

    def layer_specs(self):
        """The layer table: one dict per layer with its input and output sizes."""
        convs = [m for m in self.convs if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d))]
        return [dict(name="fc1", type="linear", cin=self.latent_dim, cout=self.fc1.out_features),
                *_conv_rows(convs, self.base_size)]

    def forward(self, z):
        h = self.fc1(z).view(-1, self.width, self.base_size, self.base_size)  # (B, W, 4, 4)
        h = torch.relu(self.bn0(h))
        return center_crop(torch.tanh(self.convs(h)), self.image_size)  # -> (B, C, S, S)
