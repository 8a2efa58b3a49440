"""The other lessons' networks, in this order: dcgan (seed 003, Udacity's DCGAN), mlp (seed
004, CS231n's fully connected GAN), infogan (seed 004, CS231n's DCGAN) and udacity-mlp (seed
003's batch-normalization lesson: a classifier only)."""
import math

import torch
import torch.nn as nn

from nets.base import Critic, _conv_out, center_crop, xavier_init


class DCGANDiscriminator(Critic):
    """Three 4x4 stride-2 convolutions, BatchNorm on all but the first, LeakyReLU 0.2, the heads
    on the flattened map. No convolution has a bias (the lesson's conv helper); the heads do."""
    family, role = "dcgan", "discriminator"
    batch_statistics = True

    def __init__(self, width=32, num_classes=0, in_channels=3, image_size=32):
        super().__init__()
        self.build_args = dict(width=width, num_classes=num_classes, in_channels=in_channels,
                               image_size=image_size)
        blocks, size, cin = [], image_size, in_channels
        for i, cout in enumerate((width, 2 * width, 4 * width)):
            layers = [nn.Conv2d(cin, cout, 4, 2, 1, bias=False)]  # the lesson's conv helper
            layers += [nn.BatchNorm2d(cout)] if i > 0 else []  # "everywhere but the first layer"
            blocks.append(nn.Sequential(*layers, nn.LeakyReLU(0.2)))
            size, cin = _conv_out(size, 4, 2, 1), cout
        self.blocks = nn.ModuleList(blocks)
        self._heads(cin * size * size, num_classes)  # 4 width x 4 x 4 at 32x32


class DCGANGenerator(nn.Module):
    """A linear layer reshaped to a 4 width x 4 x 4 map, then 4x4 stride-2 transposed
    convolutions to 32x32, tanh. As in the lesson's code, no activation follows the linear
    layer and no transposed convolution has a bias (the lesson's deconv helper)."""
    family, role = "dcgan", "generator"

    def __init__(self, latent_dim=100, width=32, out_channels=3, image_size=32):
        super().__init__()
        self.build_args = dict(latent_dim=latent_dim, width=width, out_channels=out_channels,
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


class MLPDiscriminator(Critic):
    """Fully connected C*S*S -> width -> width -> 1 (784-256-256-1 on MNIST), LeakyReLU 0.01."""
    family, role = "mlp", "discriminator"

    def __init__(self, width=256, num_classes=0, in_channels=1, image_size=28):
        super().__init__()
        self.build_args = dict(width=width, num_classes=num_classes, in_channels=in_channels,
                               image_size=image_size)
        self.blocks = nn.ModuleList([
            nn.Sequential(nn.Flatten(), nn.Linear(in_channels * image_size ** 2, width),
                          nn.LeakyReLU(0.01)),
            nn.Sequential(nn.Linear(width, width), nn.LeakyReLU(0.01)),
        ])
        self._heads(width, num_classes)  # PyTorch's default initialisation, as the notebook's


class MLPGenerator(nn.Module):
    """Fully connected noise -> width -> width -> C*S*S (96-1024-1024-784 on MNIST), tanh."""
    family, role = "mlp", "generator"

    def __init__(self, latent_dim=96, width=1024, out_channels=1, image_size=28):
        super().__init__()
        self.build_args = dict(latent_dim=latent_dim, width=width, out_channels=out_channels,
                               image_size=image_size)
        self.latent_dim, self.shape = latent_dim, (out_channels, image_size, image_size)
        self.net = nn.Sequential(
            nn.Linear(latent_dim, width), nn.ReLU(inplace=True),
            nn.Linear(width, width), nn.ReLU(inplace=True),
            nn.Linear(width, out_channels * image_size ** 2), nn.Tanh())  # default init

    def forward(self, z):
        return self.net(z).view(-1, *self.shape)  # (B, C*S*S) -> (B, C, S, S)


class InfoGANDiscriminator(Critic):
    """TensorFlow's MNIST tutorial network: two 5x5 convolutions, each with LeakyReLU 0.01 and a
    2x2 max-pool, then fully connected to 32 width (1024 at width 32), LeakyReLU, the heads."""
    family, role = "infogan", "discriminator"

    def __init__(self, width=32, num_classes=0, in_channels=1, image_size=28):
        super().__init__()
        self.build_args = dict(width=width, num_classes=num_classes, in_channels=in_channels,
                               image_size=image_size)
        size = image_size
        for _ in range(2):
            size = _conv_out(size, 5, 1, 0) // 2  # a valid 5x5 convolution, then the pool
        if size < 1:
            raise ValueError(f"image_size {image_size} is too small for two 5x5 convolutions")
        convs = [nn.Sequential(nn.Conv2d(cin, cout, 5), nn.LeakyReLU(0.01), nn.MaxPool2d(2, 2))
                 for cin, cout in ((in_channels, width), (width, 2 * width))]
        fc = nn.Sequential(nn.Flatten(), nn.Linear(2 * width * size * size, 32 * width),
                           nn.LeakyReLU(0.01))
        self.blocks = nn.ModuleList([*convs, fc])
        self._heads(32 * width, num_classes)
        xavier_init(self)


class InfoGANGenerator(nn.Module):
    """InfoGAN's MNIST generator (Chen et al. 2016, appendix C.1): two fully connected layers
    to a 4 width x 7 x 7 map, then 4x4 stride-2 transposed convolutions (7 -> 14 -> 28), tanh.
    The seed's order, ReLU before BatchNorm, is kept."""
    family, role = "infogan", "generator"

    def __init__(self, latent_dim=96, width=32, out_channels=1, image_size=28):
        super().__init__()
        self.build_args = dict(latent_dim=latent_dim, width=width, out_channels=out_channels,
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


class UdacityMLP(Critic):
    """The batch-normalization lesson's classifier (seed 003): linear layers to 2 width and
    width values (784-512-256 on MNIST), each followed by BatchNorm when batch_norm is on (then
    without a bias), then ReLU, and the heads."""
    family, role = "udacity-mlp", "discriminator"

    def __init__(self, width=256, num_classes=10, in_channels=1, image_size=28,
                 batch_norm=True):
        super().__init__()
        self.build_args = dict(width=width, num_classes=num_classes, in_channels=in_channels,
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
