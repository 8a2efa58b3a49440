"""The README's pictures, taken from the runs of jobs/cpu_results.sh: every GAN's last grid, one
run's progress, the classifier's curves and Part 2's figures, as small PNGs in one folder.

    python jobs/readme_pictures.py                                  # runs/results -> docs/results
    python jobs/readme_pictures.py --results R --out D --also runs/bn_cmp/compare.png:bn_compare

Grids (saved with every pixel drawn 2x2) come back to one pixel per pixel; matplotlib's figures
are copied as they are; a picture whose run is missing is skipped with a note.
"""
import argparse
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from flags import POSITIVE_INT, HelpFormatter, run_main  # noqa: E402
from utils.console import info
from utils.errors import UserError
from utils.files import atomic_path  # noqa: E402

GAN_RUNS = ("cs231n-gan", "cs231n-lsgan", "cs231n-dcgan", "cs231n-dcgan-fashion", "acgan",
            "wgan-clip")
VIS = "acgan/visualization/"
# (file in RESULTS, picture name, a 2x grid?); labelled grids are kept at 2x
FIGURES = (
    ("classifier/baseline_curves.png", "classifier_curves", False),
    (VIS + "real_images.png", "perturb_real", True),
    (VIS + "altered_images_baseline.png", "perturb_altered_baseline", True),
    (VIS + "perturb_gain_baseline.png", "perturb_gain_baseline", False),
    (VIS + "max_class_baseline.png", "max_class_baseline", False),
    (VIS + "max_class_gan.png", "max_class_gan", False),
    (VIS + "max_features_gan_layer4.png", "max_features_gan_layer4", True),
    # beyond the assignment: max-class --param fft --robust on, attribute, attack, transfer
    (VIS + "max_class_baseline_paramfft_robuston.png", "max_class_baseline_fft", False),
    (VIS + "attributions_baseline.png", "attributions_baseline", False),
    (VIS + "attack.png", "attack", False),
    (VIS + "transfer_baseline.png", "transfer_baseline", False),
)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=HelpFormatter)
    p.add_argument("--results", default="runs/results", help="the folder cpu_results.sh wrote")
    p.add_argument("--out", default="docs/results", help="where the pictures go")
    p.add_argument("--progress", default="cs231n-dcgan",
                   help="the run whose grids show its progress")
    p.add_argument("--columns", type=POSITIVE_INT, default=4,
                   help="epochs side by side in the progress")
    p.add_argument("--also", nargs="*", default=[], metavar="PNG:NAME",
                   help="other figures to copy as they are, each as NAME.png")
    return p.parse_args(argv)


def open_png(path, grid):
    """The picture at path (a 2x grid back to 1x); a damaged one is one line."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as img:
            img.load()
    except (OSError, UnidentifiedImageError) as e:
        raise UserError(f"{path} is not a readable PNG ({e}); make it again or leave it out")
    if not grid:
        return img
    return img.convert("RGB").resize((img.width // 2, img.height // 2), Image.NEAREST)


def save_png(img, path):
    with atomic_path(path, suffix=".png") as tmp:
        img.save(tmp, optimize=True)


def epoch_grids(run):
    """The per-epoch grids of a GAN run (output/NNN.png), first to last."""
    out = os.path.join(run, "output")
    grids = sorted((f for f in os.listdir(out) if f[:-4].isdigit() and f.endswith(".png")),
                   key=lambda f: int(f[:-4])) if os.path.isdir(out) else []
    return [os.path.join(out, f) for f in grids]


def progress_strip(grids, columns):
    """`columns` grids picked evenly from first to last, side by side, titled with their epochs."""
    from PIL import Image, ImageDraw

    picks = sorted({round(i * (len(grids) - 1) / max(columns - 1, 1)) for i in range(columns)})
    tiles = [open_png(grids[i], grid=True) for i in picks]
    gap, title = 8, 16
    w = sum(t.width for t in tiles) + gap * (len(tiles) - 1)
    strip = Image.new("RGB", (w, max(t.height for t in tiles) + title), "white")
    draw, x = ImageDraw.Draw(strip), 0
    for i, tile in zip(picks, tiles):
        epoch = int(os.path.basename(grids[i])[:-4]) + 1
        draw.text((x + 2, 2), f"after epoch {epoch}", fill="black")
        strip.paste(tile, (x, title))
        x += tile.width + gap
    return strip


def make_pictures(args):
    made = []
    for name in GAN_RUNS:
        grids = epoch_grids(os.path.join(args.results, name))
        if not grids:
            info(f"skipped gan_{name}: {args.results}/{name}/output has no grid")
            continue
        save_png(open_png(grids[-1], grid=True), os.path.join(args.out, f"gan_{name}.png"))
        made.append(f"gan_{name}.png")
    grids = epoch_grids(os.path.join(args.results, args.progress))
    if len(grids) > 1:
        save_png(progress_strip(grids, args.columns),
                 os.path.join(args.out, f"progress_{args.progress}.png"))
        made.append(f"progress_{args.progress}.png")
    figures = [(os.path.join(args.results, src), name, grid) for src, name, grid in FIGURES]
    for spec in args.also:
        src, _, name = spec.rpartition(":")
        if not src or not name:
            raise UserError(f"--also {spec}: give PNG:NAME (the figure, then its new name)")
        figures.append((src, name, False))
    for src, name, grid in figures:
        if not os.path.isfile(src):
            info(f"skipped {name}: {src} is not there")
            continue
        save_png(open_png(src, grid), os.path.join(args.out, f"{name}.png"))
        made.append(f"{name}.png")
    total = sum(os.path.getsize(os.path.join(args.out, f)) for f in made)
    info(f"{len(made)} pictures in {args.out}, {total / 2**20:.2f} MiB in all")
    return made


def main(argv=None):
    make_pictures(parse_args(argv))
    return 0


if __name__ == "__main__":
    run_main(main)
