"""Pictures: image grids (PNG) and training curves from log records, written atomically."""
import math

import torch

from utils.files import atomic_path


def pyplot():
    """matplotlib.pyplot, drawing off-screen."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_plot(fig, path, dpi=80):
    """Write a matplotlib figure to a PNG file atomically, and close it."""
    try:
        with atomic_path(path, suffix=".png") as tmp:
            fig.savefig(tmp, dpi=dpi)
    finally:
        pyplot().close(fig)


def to_unit(images):
    """Images in [-1, 1] (B, C, H, W) -> float [0, 1] on the CPU."""
    return images.detach().float().cpu().add(1).div(2).clamp(0, 1)


def as_uint8(images):
    """Images in [-1, 1] (B, C, S, S) -> uint8 in [0, 255] on the CPU, the PNG files' values."""
    return images.detach().float().add(1).mul(127.5).round().clamp(0, 255).to(torch.uint8).cpu()


def save_grid(images, path, nrow=10, scale=2, labels=None, mark_column=None):
    """Save images (B, C, H, W) in [0, 1] as one PNG grid, nrow per row, with the assignment's
    white gaps, each pixel scale x scale. labels: a text under each column (class names);
    mark_column: a column framed in red (the query of a row)."""
    from PIL import Image, ImageDraw
    from torchvision.utils import make_grid

    grid = make_grid(images.detach().float().cpu().clamp(0, 1), nrow=nrow, padding=2, pad_value=1)
    array = (grid * 255).round().byte().permute(1, 2, 0).numpy()  # (H, W, 3)
    img = Image.fromarray(array)
    if scale > 1:
        img = img.resize((img.width * scale, img.height * scale), Image.NEAREST)
    cell_h, cell_w = (images.shape[-2] + 2) * scale, (images.shape[-1] + 2) * scale
    if mark_column is not None:
        draw = ImageDraw.Draw(img)
        for r in range(-(-len(images) // nrow)):  # rows
            x, y = mark_column * cell_w, r * cell_h
            draw.rectangle([x, y, x + cell_w + 2 * scale - 1, y + cell_h + 2 * scale - 1],
                           outline=(220, 30, 30), width=2 * scale)
    if labels:  # under the grid, a white strip 14 pixels high
        framed = Image.new("RGB", (img.width, img.height + 14), "white")
        framed.paste(img, (0, 0))
        draw = ImageDraw.Draw(framed)
        for c, text in enumerate(labels[:nrow]):
            text = str(text)[:max(1, cell_w // 6)]  # the default font is 6 pixels a letter
            x = 2 * scale + c * cell_w + (cell_w - 2 * scale) // 2 - 3 * len(text)
            draw.text((max(0, x), img.height + 1), text, fill=(0, 0, 0))
        img = framed
    with atomic_path(path, suffix=".png") as tmp:
        img.save(tmp)


# Each trainer's curves (panel title, the log's keys drawn in it), by the trainer's kind.
QUALITY_KEYS = ("fid", "kid", "cfid", "is")  # train_gan.py --eval_every's, a panel each
CURVE_PANELS = {
    "baseline": [("cross-entropy", ["train_loss", "test_loss"]),
                 ("accuracy (%)", ["train_acc", "test_acc"])],
    "gan": [("discriminator scores", ["d_real", "d_fake"]),
            ("score gap (the Wasserstein estimate for WGANs)", ["w_dist"]),
            ("losses", ["d_loss", "g_loss"]), ("gradient penalty", ["gp"]),
            ("class cross-entropy", ["real_class", "fake_class"]),
            ("accuracy (%)", ["real_acc", "test_acc", "cacc"])]
           + [(f"{k.upper()} (during training)", [k]) for k in QUALITY_KEYS],
    "simclr": [("NT-Xent loss", ["loss"]),
               ("views whose nearest view is their pair (%)", ["pos_acc"])],
}


def gan_title(settings):
    """What a GAN run is, in a few words, from its settings."""
    return (f"{settings.get('loss', 'wgan-gp')} ({settings.get('arch', 'ie534')} networks"
            f"{', ACGAN' if settings.get('acgan', 'on') == 'on' else ''}) on "
            f"{settings.get('dataset', 'cifar10')}")


def _number(v):
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def curves_figure(records, panels, title, xkey="epoch", ncols=3, figsize=None):
    """A matplotlib figure of curves from log records, a line per key of panels [(title, [keys])];
    None when no panel has data."""
    from matplotlib.ticker import MaxNLocator

    def points(key):  # numbers only: a damaged record's text or list is left out
        return [(r[xkey], r[key]) for r in records
                if _number(r.get(key)) and _number(r.get(xkey))]

    # a figure that never left exactly zero says nothing (the penalty of a loss without one)
    panels = [(name, kept) for name, keys in panels
              if (kept := [k for k in keys if any(y != 0 for _, y in points(k))])]
    if not panels:
        return None
    ncols = min(ncols, len(panels))
    nrows = math.ceil(len(panels) / ncols)
    fig, axes = pyplot().subplots(nrows, ncols, figsize=figsize or (4 * ncols, 2.8 * nrows),
                                  squeeze=False)
    for ax in axes.flat[len(panels):]:
        ax.axis("off")
    for ax, (name, keys) in zip(axes.flat, panels):
        for key in keys:
            pts = points(key)
            ax.plot(*zip(*pts), marker="." if len(pts) < 30 else None, label=key)
        ax.set_title(name, fontsize=9)
        ax.set_xlabel(xkey, fontsize=8)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # whole epochs
        ax.grid(alpha=0.3)
        if len(keys) > 1:
            ax.legend(fontsize=7)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig


def plot_curves(records, panels, path, title, xkey="epoch", ncols=3):
    """The curves as a PNG file (written atomically)."""
    fig = curves_figure(records, panels, title, xkey, ncols)
    if fig is not None:
        save_plot(fig, path, dpi=80)

