"""The networks by family name (ARCHITECTURES), built from sizes given as constructor
arguments; the nn.Modules themselves are in nets/ (ie534.py the assignment's, lessons.py the
other lessons', simclr.py SimCLR's). docs/lessons.md describes each family.

    python models.py                     # the assignment's tables at width 196
    python models.py --arch infogan --image_size 28 --channels 1

Every discriminator returns (score (B,), class logits (B, num_classes) or None); features(x,
k) is its k-th block's output, max-pooled over space; spectral_norm=True (discriminator())
puts spectral normalisation on every convolution and linear layer of any family (SNGAN).
Every generator maps noise (B, latent_dim) to images (B, C, S, S) in [-1, 1], cropping the
centre when its natural size is larger (32 for 28x28 MNIST).
"""
import argparse
from dataclasses import dataclass

import torch.nn as nn

# the networks, re-exported: `from models import Discriminator` as the assignment writes it
from nets.ie534 import Discriminator, Generator
from nets.lessons import (DCGANDiscriminator, DCGANGenerator, InfoGANDiscriminator,
                          InfoGANGenerator, MLPDiscriminator, MLPGenerator, UdacityMLP)
from nets.simclr import ProjectionHead, SimCLRNet  # noqa: F401


@dataclass(frozen=True)
class Family:
    """A family of networks: its discriminator and generator classes (None: a classifier
    alone), the width when none is given and how many times as wide its generator is."""
    discriminator: type
    generator: type
    width: int
    generator_scale: int = 1


# Families by name. mlp's 256 and 4 x 256 = 1024 are the seed's hidden sizes.
ARCHITECTURES = {
    "ie534": Family(Discriminator, Generator, width=196),
    "dcgan": Family(DCGANDiscriminator, DCGANGenerator, width=32),
    "mlp": Family(MLPDiscriminator, MLPGenerator, width=256, generator_scale=4),
    "infogan": Family(InfoGANDiscriminator, InfoGANGenerator, width=32),
    "udacity-mlp": Family(UdacityMLP, None, width=256),  # a classifier: no generator
}


SIZES = {"width": 1, "latent_dim": 1, "in_channels": 1, "out_channels": 1, "num_classes": 0,
         "image_size": 8}  # the least each size can be (8: three halvings leave one pixel)


def check_sizes(family, **sizes):
    """A ValueError in words unless the family is known and every size a whole number at least
    its least (SIZES): checked before any layer is made."""
    if family not in ARCHITECTURES:
        raise ValueError(f"unknown family of networks '{family}'; choose one of "
                         f"{', '.join(ARCHITECTURES)}")
    for name in [n for n in sizes if n in SIZES]:
        value, least = sizes[name], SIZES[name]
        if isinstance(value, bool) or not isinstance(value, int) or value < least:
            raise ValueError(f"{name} must be a whole number >= {least}, got {value!r}")


def build(family, role, spectral_norm=False, **sizes):
    """A network by family name and role ('discriminator' or 'generator'), from the
    constructor arguments a model file records."""
    check_sizes(family, **sizes)
    if role not in ("discriminator", "generator") or getattr(ARCHITECTURES[family], role) is None:
        raise ValueError(f"the {family} family has no {role}")
    model = getattr(ARCHITECTURES[family], role)(**sizes)
    return with_spectral_norm(model) if spectral_norm else model


def with_spectral_norm(model):
    """Spectral normalisation (Miyato et al. 2018) on every convolution and linear layer of a
    discriminator; its power-iteration vectors are buffers, so they are saved and resumed."""
    for m in list(model.modules()):
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            nn.utils.parametrizations.spectral_norm(m)
    model.build_args["spectral_norm"] = True
    return model


def default_width(family):
    check_sizes(family)
    return ARCHITECTURES[family].width


def discriminator(family, width=None, num_classes=0, channels=3, image_size=32,
                  spectral_norm=False, **options):
    """The family's discriminator for images (channels, image_size, image_size); options are
    the family's own constructor arguments (udacity-mlp: batch_norm)."""
    width = default_width(family) if width is None else width
    return build(family, "discriminator", spectral_norm, width=width, num_classes=num_classes,
                 in_channels=channels, image_size=image_size, **options)


def generator(family, latent_dim, width=None, channels=3, image_size=32):
    """The family's generator of images (channels, image_size, image_size)."""
    width = default_width(family) if width is None else width
    check_sizes(family, width=width, latent_dim=latent_dim)
    f = ARCHITECTURES[family]
    if f.generator is None:
        raise ValueError(f"the {family} family is a classifier: it has no generator")
    return build(family, "generator", latent_dim=latent_dim, width=f.generator_scale * width,
                 out_channels=channels, image_size=image_size)


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
    return "\n".join("  ".join(v.ljust(w) for v, w in zip(line, widths)).rstrip()
                     for line in table)


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
    try:
        nets = [("Discriminator", discriminator(args.arch, args.width, args.num_classes,
                                                args.channels, args.image_size))]
        if ARCHITECTURES[args.arch].generator is not None:
            nets.append(("Generator", generator(args.arch, args.latent_dim, args.width,
                                                args.channels, args.image_size)))
    except ValueError as e:  # a size out of range: one line, exit 2
        parser.exit(2, f"models.py: error: {e} (see --help)\n")
    for title, model in nets:
        params = sum(p.numel() for p in model.parameters())
        print(f"{title} ({args.arch}, {params:,} parameters)")
        print(format_table(model.layer_specs()) if hasattr(model, "layer_specs") else model)
        print()


if __name__ == "__main__":
    main()
