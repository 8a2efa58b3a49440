"""Pictures: image grids (PNG) and training curves from log records, written atomically."""
import math

import torch

from utils.files import atomic_path


def to_unit(images):
    """Images in [-1, 1] (B, C, H, W) -> float [0, 1] on the CPU."""
    return images.detach().float().cpu().add(1).div(2).clamp(0, 1)


def as_uint8(images):
    """Images in [-1, 1] (B, C, S, S) -> uint8 in [0, 255] on the CPU, the PNG files' values."""
    return images.detach().float().add(1).mul(127.5).round().clamp(0, 255).to(torch.uint8).cpu()


def save_grid(images, path, nrow=10, scale=2):
    """Save images (B, C, H, W) in [0, 1] as one PNG grid, nrow per row, row-major.

    Two-pixel white gaps as in the assignment's plot; each pixel drawn scale x scale.
    """
    from PIL import Image
    from torchvision.utils import make_grid

    grid = make_grid(images.detach().float().cpu().clamp(0, 1), nrow=nrow, padding=2,
                     pad_value=1.0)
    array = (grid * 255).round().byte().permute(1, 2, 0).numpy()  # (H, W, 3)
    img = Image.fromarray(array)
    if scale > 1:
        img = img.resize((img.width * scale, img.height * scale), Image.NEAREST)
    with atomic_path(path, suffix=".png") as tmp:
        img.save(tmp)


def plot_curves(records, panels, path, title, xkey="epoch", ncols=3):
    """Curves from log records: panels is a list of (panel title, [keys]), one line per key."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [(name, [k for k in keys if any(k in r for r in records)]) for name, keys in panels]
    panels = [(name, keys) for name, keys in panels if keys]
    if not panels:
        return
    ncols = min(ncols, len(panels))
    nrows = math.ceil(len(panels) / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(4 * ncols, 2.8 * nrows), squeeze=False)
    for ax in axes.flat[len(panels):]:
        ax.axis("off")
    for ax, (name, keys) in zip(axes.flat, panels):
        for key in keys:
            pts = [(r[xkey], r[key]) for r in records if key in r and xkey in r]
            ax.plot(*zip(*pts), marker="." if len(pts) < 30 else None, label=key)
        ax.set_title(name, fontsize=9)
        ax.set_xlabel(xkey, fontsize=8)
        ax.grid(alpha=0.3)
        if len(keys) > 1:
            ax.legend(fontsize=7)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    try:
        with atomic_path(path, suffix=".png") as tmp:
            fig.savefig(tmp, dpi=80)
    finally:
        plt.close(fig)

