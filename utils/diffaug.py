"""DiffAugment (Zhao et al. 2020): random transforms on every image the discriminator sees,
real and fake, so that it cannot memorise few images, while the generator's gradient flows
through them (docs/beyond.md). Images in [-1, 1] (B, C, H, W); per-sample draws from the run's
seeded generator; sample() and apply() are apart so that the same draws can be applied again.
"""
import functools

import torch
import torch.nn.functional as F

POLICIES = ("color", "translation", "cutout")


def parse_policy(text):
    """'color,translation,cutout' (any subset, in this order when applied) -> a tuple; '' or
    'off' -> ()."""
    if text in (None, "", "off"):
        return ()
    chosen = [p.strip() for p in text.split(",") if p.strip()]
    bad = [p for p in chosen if p not in POLICIES]
    if bad:
        raise ValueError(f"unknown DiffAugment transform {bad[0]}; choose from "
                         f"{', '.join(POLICIES)}")
    return tuple(p for p in POLICIES if p in chosen)


class DiffAugment:
    def __init__(self, policy, translation=0.125, cutout=0.5):
        self.policy = parse_policy(policy) if isinstance(policy, str) else tuple(policy)
        self.translation, self.cutout = translation, cutout

    def sample(self, n, height, width, generator):
        """The draws of n images: a dict of per-sample tensors."""
        dev = generator.device
        u = lambda *shape: torch.rand(*shape, generator=generator, device=dev)  # noqa: E731
        randint = functools.partial(torch.randint, size=(n,), generator=generator, device=dev)
        p = {}
        if "color" in self.policy:
            p["brightness"], p["saturation"], p["contrast"] = u(n) - 0.5, u(n) * 2, u(n) + 0.5
        if "translation" in self.policy:
            sy, sx = int(height * self.translation + 0.5), int(width * self.translation + 0.5)
            p["shift_y"], p["shift_x"] = randint(-sy, sy + 1), randint(-sx, sx + 1)
        if "cutout" in self.policy:
            ch, cw = int(height * self.cutout + 0.5), int(width * self.cutout + 0.5)
            p["cut_y"] = randint(0, height + 1 - ch % 2)
            p["cut_x"] = randint(0, width + 1 - cw % 2)
        return p

    def apply(self, x, p):
        """The transforms with the draws p, differentiable in x."""
        if "color" in self.policy:
            x = color(x, p["brightness"], p["saturation"], p["contrast"])
        if "translation" in self.policy:
            x = translate(x, p["shift_y"], p["shift_x"])
        if "cutout" in self.policy:
            x = cutout(x, p["cut_y"], p["cut_x"], self.cutout)
        return x

    def __call__(self, x, generator):
        if not self.policy:
            return x
        return self.apply(x, self.sample(len(x), x.shape[2], x.shape[3], generator))


def color(x, brightness, saturation, contrast):
    view = lambda t: t.to(x.dtype).view(-1, 1, 1, 1)  # noqa: E731  (B,) -> (B, 1, 1, 1)
    x = x + view(brightness)
    mean = x.mean(dim=1, keepdim=True)  # over the channels: a grey image keeps its value
    x = (x - mean) * view(saturation) + mean
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    return (x - mean) * view(contrast) + mean


def translate(x, shift_y, shift_x):
    """Each image shifted by (shift_y, shift_x) pixels; what comes in is zero."""
    B, C, H, W = x.shape
    padded = F.pad(x, [1, 1, 1, 1])  # index 0 and H + 1 are the zeros
    rows = (torch.arange(H, device=x.device)[None] - shift_y[:, None] + 1).clamp(0, H + 1)
    cols = (torch.arange(W, device=x.device)[None] - shift_x[:, None] + 1).clamp(0, W + 1)
    b = torch.arange(B, device=x.device)[:, None, None]
    out = padded.permute(0, 2, 3, 1)[b, rows[:, :, None], cols[:, None, :]]  # (B, H, W, C)
    return out.permute(0, 3, 1, 2)


def cutout(x, cut_y, cut_x, ratio=0.5):
    """A square of ratio x the image's side, centred at (cut_y, cut_x) - half its side, set
    to zero in each image."""
    B, C, H, W = x.shape
    ch, cw = int(H * ratio + 0.5), int(W * ratio + 0.5)
    ys = torch.arange(H, device=x.device)[None, :, None]
    xs = torch.arange(W, device=x.device)[None, None, :]
    top, left = (cut_y - ch // 2)[:, None, None], (cut_x - cw // 2)[:, None, None]
    inside = (ys >= top) & (ys < top + ch) & (xs >= left) & (xs < left + cw)  # (B, H, W)
    return x * (~inside)[:, None].to(x.dtype)
