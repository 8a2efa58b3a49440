"""Augmentation of whole batches on the training device, each sample with its own draws (all
from the generator passed in), equal to torchvision's transforms for the same draws: Augment
(the assignment's) and ContrastiveAugment (SimCLR's). Images are float [0, 1] (B, C, H, W).
"""
import math
from dataclasses import dataclass

import torch

from utils.data import make_generator


def jitter_strengths(seed, choice="assignment"):
    """ColorJitter strengths (brightness, contrast, saturation, hue), drawn once per run as the
    assignment's 0.1*randn(1); a negative draw becomes 0, "off", as the assignment's torchvision
    (0.2) read it (docs/differences.md). choice 'off' or 'B,C,S,H' (--color_jitter) sets them."""
    if choice == "off":
        return 0.0, 0.0, 0.0, 0.0
    if choice != "assignment":
        return tuple(float(v) for v in choice.split(","))
    g = make_generator("cpu", seed, "color_jitter")
    b, c, s, h = (0.1 * torch.randn(4, generator=g)).clamp(min=0).tolist()
    return b, c, s, min(h, 0.5)


def jitter_draws(strengths, n, u, device):
    """ColorJitter's per-sample factors (n, 4) and order (n, 4), from u(*shape) uniform draws."""
    b, c, s, h = strengths
    lo = torch.tensor([max(0.0, 1 - b), max(0.0, 1 - c), max(0.0, 1 - s), -h], device=device)
    hi = torch.tensor([1 + b, 1 + c, 1 + s, h], device=device)
    return lo + u(n, 4) * (hi - lo), u(n, 4).argsort(dim=1)


@dataclass
class AugmentParams:
    """Per-sample parameters of one batch: crop boxes, jitter factors and order, flips."""
    top: torch.Tensor      # (B,) int64
    left: torch.Tensor     # (B,) int64
    size: torch.Tensor     # (B,) int64, side of the square crop
    factors: torch.Tensor  # (B, 4) brightness, contrast, saturation multipliers, hue shift
    order: torch.Tensor    # (B, 4) a permutation of the four jitter operations
    flip: torch.Tensor     # (B,) bool


class Augment:
    """The assignment's RandomResizedCrop(size, scale=(0.7, 1.0), ratio=(1, 1)) (crop=False
    leaves it out) -> ColorJitter(b, c, s, h) -> RandomHorizontalFlip() on a batch."""

    def __init__(self, strengths, flip=True, scale=(0.7, 1.0), size=32, crop=True):
        self.strengths, self.use_flip, self.scale, self.size = strengths, flip, scale, size
        self.crop = crop

    def sample(self, n, generator, height=32, width=32):
        dev = generator.device
        u = lambda *shape: torch.rand(*shape, generator=generator, device=dev)  # noqa: E731
        area = u(n) * (self.scale[1] - self.scale[0]) + self.scale[0]
        # ratio 1: a square of side round(sqrt(area * H * W)); torchvision's first try always fits
        side = torch.sqrt(area * height * width).round().long().clamp(1, min(height, width))
        top = (u(n) * (height - side + 1)).floor().long()
        left = (u(n) * (width - side + 1)).floor().long()
        factors, order = jitter_draws(self.strengths, n, u, dev)
        flip = (u(n) < 0.5) if self.use_flip else torch.zeros(n, dtype=torch.bool, device=dev)
        return AugmentParams(top, left, side, factors, order, flip)

    def apply(self, x, p):
        if self.crop:
            x = resized_crop(x, p.top, p.left, p.size, self.size)
        x = color_jitter(x, p.factors, p.order, active=[s > 0 for s in self.strengths])
        return torch.where(p.flip[:, None, None, None], x.flip(3), x)

    def __call__(self, x, generator):
        return self.apply(x, self.sample(x.shape[0], generator, x.shape[2], x.shape[3]))


def _source_index(out_size, crop, crop_start):
    """Bilinear sampling positions (align_corners=False) of out_size pixels in each crop."""
    pos = (torch.arange(out_size, device=crop.device) + 0.5) * (crop[:, None] / out_size) - 0.5
    pos = pos.clamp(min=0)  # (B, out)
    i0 = pos.floor().long()
    i1 = torch.minimum(i0 + 1, crop[:, None] - 1)
    return i0 + crop_start[:, None], i1 + crop_start[:, None], pos - i0


def resized_crop(x, top, left, side, out_size, width=None):
    """Crop (top, left, side rows, width columns, default side) from each image and resize it
    as interpolate(bilinear, align_corners=False): (B, C, H, W) -> (B, C, out_size, out_size)."""
    B, C, H, W = x.shape
    c0, c1, wc = _source_index(out_size, side if width is None else width, left)  # (B, out)
    r0, r1, wr = _source_index(out_size, side, top)
    idx = lambda i: i[:, None, None, :].expand(B, C, H, out_size)  # noqa: E731
    cols = torch.gather(x, 3, idx(c0)) * (1 - wc[:, None, None, :]) \
        + torch.gather(x, 3, idx(c1)) * wc[:, None, None, :]  # (B, C, H, out)
    idx = lambda i: i[:, None, :, None].expand(B, C, out_size, out_size)  # noqa: E731
    return torch.gather(cols, 2, idx(r0)) * (1 - wr[:, None, :, None]) \
        + torch.gather(cols, 2, idx(r1)) * wr[:, None, :, None]  # (B, C, out, out)


def _gray(x):  # (B, 1, H, W)
    return x if x.shape[1] == 1 else 0.2989 * x[:, 0:1] + 0.587 * x[:, 1:2] + 0.114 * x[:, 2:3]


def _blend(x, other, f):
    return (f * x + (1 - f) * other).clamp_(0, 1)


def adjust_hue(x, shift):
    """Rotate the hue of each image by shift[b] (fraction of a turn), as torchvision does."""
    r, g, b = x.unbind(1)
    maxc, minc = x.max(1).values, x.min(1).values
    delta = maxc - minc
    safe = torch.where(delta > 0, delta, torch.ones_like(delta))
    rc, gc, bc = (maxc - r) / safe, (maxc - g) / safe, (maxc - b) / safe
    h = torch.where(maxc == r, bc - gc, torch.where(maxc == g, 2.0 + rc - bc, 4.0 + gc - rc))
    h = torch.where(delta > 0, (h / 6.0) % 1.0, torch.zeros_like(h))
    s = torch.where(maxc > 0, delta / torch.where(maxc > 0, maxc, torch.ones_like(maxc)),
                    torch.zeros_like(maxc))
    h = (h + shift[:, None, None]) % 1.0
    i = torch.floor(h * 6.0)
    f = h * 6.0 - i
    i = i.long() % 6
    p, q, t = maxc * (1 - s), maxc * (1 - s * f), maxc * (1 - s * (1 - f))
    # For each sextant i, which of (v = maxc, q, p, t) makes r, g and b.
    choices = torch.stack([maxc, q, p, t])  # (4, B, H, W)
    table = torch.tensor([[0, 3, 2], [1, 0, 2], [2, 0, 3], [2, 1, 0], [3, 2, 0], [0, 2, 1]],
                         device=x.device)
    out = torch.gather(choices, 0, table[i].permute(3, 0, 1, 2))  # (3, B, H, W)
    return out.permute(1, 0, 2, 3).clamp(0, 1)


def color_jitter(x, factors, order, active=(True, True, True, True)):
    """Brightness, contrast, saturation and hue in a per-sample order (B, 4) with factors (B, 4).
    As torchvision's, an inactive one (strength 0) is skipped, and saturation and hue leave a
    grey image (C = 1) alone."""
    if x.shape[1] == 1:
        active = (active[0], active[1], False, False)
    f = factors[:, :, None, None, None]  # (B, 4, 1, 1, 1)
    ops = (
        lambda x: _blend(x, torch.zeros_like(x), f[:, 0]),
        lambda x: _blend(x, _gray(x).mean(dim=(1, 2, 3), keepdim=True), f[:, 1]),
        lambda x: _blend(x, _gray(x), f[:, 2]),
        lambda x: adjust_hue(x, factors[:, 3]),
    )
    ops = [(k, op) for k, (op, on) in enumerate(zip(ops, active)) if on]
    for stage in range(4):
        which = order[:, stage][:, None, None, None]
        out = x
        for k, op in ops:
            out = torch.where(which == k, op(x), out)
        x = out
    return x


class ContrastiveAugment:
    """SimCLR's views (Chen et al. 2020, appendix A) on a batch: a random resized crop, a flip
    (where the dataset allows it), colour jitter (strength 0.5, SimCLR's for CIFAR-10) with
    probability 0.8 and greyscale with probability 0.2."""

    def __init__(self, size, flip=True, jitter=(0.4, 0.4, 0.4, 0.1), p_jitter=0.8, p_gray=0.2,
                 scale=(0.08, 1.0), ratio=(3 / 4, 4 / 3), tries=10):
        self.size, self.flip, self.jitter = size, flip, jitter
        self.p_jitter, self.p_gray = p_jitter, p_gray
        self.scale, self.ratio, self.tries = scale, ratio, tries

    def crops(self, n, generator, height, width):
        """(top, left, crop height, crop width), each (n,): torchvision's RandomResizedCrop."""
        dev = generator.device
        u = lambda *shape: torch.rand(*shape, generator=generator, device=dev)  # noqa: E731
        area = height * width * (self.scale[0] + u(n, self.tries) * (self.scale[1] -
                                                                      self.scale[0]))
        lo, hi = math.log(self.ratio[0]), math.log(self.ratio[1])
        aspect = torch.exp(lo + u(n, self.tries) * (hi - lo))
        w = torch.sqrt(area * aspect).round().long()  # (n, tries)
        h = torch.sqrt(area / aspect).round().long()
        ok = (w > 0) & (h > 0) & (w <= width) & (h <= height)
        first = ok.float().argmax(1, keepdim=True)  # the first try that fits
        found = ok.any(1)
        h = torch.where(found, h.gather(1, first)[:, 0], height)  # else the whole image
        w = torch.where(found, w.gather(1, first)[:, 0], width)
        top = (u(n) * (height - h + 1)).floor().long()
        left = (u(n) * (width - w + 1)).floor().long()
        return top, left, h, w

    def __call__(self, x, generator):
        n, _, height, width = x.shape
        dev = generator.device
        top, left, h, w = self.crops(n, generator, height, width)
        x = resized_crop(x, top, left, h, self.size, width=w)
        u = lambda *shape: torch.rand(*shape, generator=generator, device=dev)  # noqa: E731
        if self.flip:
            x = torch.where((u(n) < 0.5)[:, None, None, None], x.flip(3), x)
        factors, order = jitter_draws(self.jitter, n, u, dev)
        jittered = color_jitter(x, factors, order, active=[v > 0 for v in self.jitter])
        x = torch.where((u(n) < self.p_jitter)[:, None, None, None], jittered, x)
        gray = _gray(x).expand_as(x)  # torchvision's Grayscale(3)
        return torch.where((u(n) < self.p_gray)[:, None, None, None], gray, x)
