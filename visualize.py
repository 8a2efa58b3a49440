"""Part 2: what the two discriminators have learned, and the report.

    python visualize.py all                        # every figure for both models, then the PDF
    python visualize.py perturb --gain 4           # real / gradient / altered images
    python visualize.py max-class --model gan      # images maximising each class output
    python visualize.py max-features --layers 4 8 --jitter 2 --blur_every 4
    python visualize.py samples --classes cat ship --n_per_class 8
    python visualize.py report                     # gather everything into report.pdf
    python visualize.py all --run_dir runs/demo    # after `make demo`
    python visualize.py compare --runs runs/bn runs/no_bn --out_dir runs   # classifier runs

docs/visualize.md: the model files read, the figures, their files and summary.json.
"""
import json
import os
import time

from flags import (COUNT, NONNEGATIVE, POSITIVE, POSITIVE_INT, SEED, ArgumentParser,
                   add_speed_flags, number, run_main)
from utils import runfiles
from utils.console import info, tidy
from utils.errors import UserError
from utils.figures.ascent import run_max_class, run_max_features
from utils.figures.attack import run_attack
from utils.figures.attribution import check_gradcam_layer, run_attribute
from utils.figures.compare import read_history, run_compare
from utils.figures.context import Context
from utils.figures.neighbours import run_neighbours
from utils.figures.options import FigureOptions
from utils.figures.perturbation import run_perturb
from utils.figures.report import build_report
from utils.figures.samples import run_export, run_samples
from utils.figures.transfer import run_transfer
from utils.extras import require
from utils.files import FolderLock, check_writable_folder, remove_stale_temps


def add_models(p):
    g = p.add_argument_group("models and data")
    g.add_argument("--run_dir", default=".", help="the folder the trainers wrote (their --out_dir)")
    g.add_argument("--out_dir", default=None,
                   help="where figures go (default RUN_DIR/visualization)")
    g.add_argument("--model", choices=("both", "baseline", "gan"), default="both",
                   help="which discriminator: baseline (cifar10.model), gan (discriminator.model)")
    g.add_argument("--baseline_model", default=None, help="default RUN_DIR/cifar10.model")
    g.add_argument("--gan_model", default=None, help="default RUN_DIR/discriminator.model")
    g.add_argument("--generator_model", default=None,
                   help="default RUN_DIR/generator_ema.model when there is one, else "
                        "RUN_DIR/generator.model")
    g.add_argument("--dataset", default=None,
                   help="test images from this dataset (default: the one the model was trained on)")
    g.add_argument("--data_dir", default=None, help="its folder (default: the model's)")
    g.add_argument("--cache_dir", default=None,
                   help="cache of decoded image folders and the digits")
    g.add_argument("--device", default="auto", help="auto (cuda when available), cpu, cuda, cuda:N")
    g.add_argument("--seed", type=SEED, default=0, help="picks the test batch, noise and jitter")
    g.add_argument("--batch_size", type=POSITIVE_INT, default=100,
                   help="test images for perturb and the mean image")
    # Part 2's images are input gradients: fp32 on every device unless --amp on asks for bf16
    add_speed_flags(p, ("amp", "channels_last"), defaults={"amp": "off"})


LEVELS = number(float, 0, 255)  # a change of 8-bit pixel levels
GRID_SIDE = number(int, 1, 100)  # images along one side of a figure's grid


def add_perturb(p):
    g = p.add_argument_group("perturb")
    g.add_argument("--gain", type=LEVELS, default=8.0,
                   help="8-bit levels each pixel moves against the gradient's sign")
    g.add_argument("--max_gain", type=number(int, 0, 255), default=16,
                   help="accuracy-vs-gain plot: gains 0..N")


def add_ascent(p, features=False):
    g = p.add_argument_group("gradient ascent on the input (max-class, max-features)")
    g.add_argument("--steps", type=POSITIVE_INT, default=200, help="ascent steps")
    g.add_argument("--lr", type=POSITIVE, default=0.1, help="step size on the input gradient")
    g.add_argument("--weight_decay", type=NONNEGATIVE, default=0.001,
                   help="x -= weight_decay * x * |x| each step, as the assignment")
    if features:
        g.add_argument("--layers", type=POSITIVE_INT, nargs="+", default=None,
                       help="max-features: layers to visualise (default: the assignment's 2 3 4 "
                            "6 8 for its network, which has 1..8; every layer of the others)")
        g.add_argument("--n_features", type=POSITIVE_INT, default=100,
                       help="max-features: the first N features")
    g.add_argument("--jitter", type=number(int, 0, 16), default=0,
                   help="regulariser: shift the image by up to N pixels each step (0: off; at "
                        "most 16, half a 32-pixel image)")
    g.add_argument("--blur_every", type=COUNT, default=0,
                   help="regulariser: Gaussian blur every N steps (0: off)")
    g.add_argument("--blur_sigma", type=POSITIVE, default=0.5, help="the blur's sigma in pixels")
    g.add_argument("--param", choices=("pixel", "fft"), default="pixel",
                   help="the image's parameters: pixel (the assignment's ascent) or fft (lucid's: "
                        "Fourier coefficients scaled by 1/f in decorrelated colours, Adam)")
    g.add_argument("--robust", choices=("on", "off"), default="off",
                   help="transformation robustness at every step: padding, jitter, scale and "
                        "rotation sized for 32-pixel images, drawn from --seed")
    g.add_argument("--diversity", type=NONNEGATIVE, default=0.0,
                   help="with --param fft and --copies > 1: push the copies of an objective "
                        "apart by this weight x their Gram matrices' similarity")
    g.add_argument("--copies", type=POSITIVE_INT, default=1,
                   help="with --param fft: images per class or feature (rows of the grid)")
    g.add_argument("--fft_lr", type=POSITIVE, default=0.005,
                   help="with --param fft: Adam's learning rate (0.005 keeps 32-pixel images "
                        "smooth; docs/ has lucid's 0.05 beside it)")


def add_samples(p):
    g = p.add_argument_group("samples")
    g.add_argument("--classes", nargs="+", default=["all"],
                   help="class names or indices (default all: one column each)")
    g.add_argument("--n_per_class", type=GRID_SIDE, default=10, help="samples per class")
    g.add_argument("--interp_steps", type=GRID_SIDE, default=10,
                   help="images in each class's interpolation row")


def add_export(p):
    p.add_argument_group("export").add_argument(
        "--n", type=POSITIVE_INT, default=50000,
        help="how many generated images to write as PNG files (50,000: what FID and IS are "
             "reported on); into --out_dir, default RUN_DIR/export")


def add_neighbours(p):
    g = p.add_argument_group("neighbours (an encoder from train_simclr.py)")
    g.add_argument("--encoder", default=None, help="default RUN_DIR/simclr.model")
    g.add_argument("--n_queries", type=GRID_SIDE, default=8, help="test images, one row each")
    g.add_argument("--k", type=GRID_SIDE, default=8,
                   help="nearest training images shown per test image")


def add_attribute(p):
    g = p.add_argument_group("attribute: saliency, integrated gradients, Grad-CAM")
    g.add_argument("--n_images", type=GRID_SIDE, default=8, help="test images, one row each")
    g.add_argument("--ig_steps", type=POSITIVE_INT, default=32, help="integrated gradients' steps")
    g.add_argument("--ig_batch", type=POSITIVE_INT, default=64,
                   help="images per batch inside integrated gradients (memory)")
    g.add_argument("--gradcam_layer", type=POSITIVE_INT, default=None,
                   help="the block Grad-CAM reads (default the last)")


def add_attack(p):
    g = p.add_argument_group("attack: PGD")
    g.add_argument("--max_budget", type=number(int, 0, 255), default=16,
                   help="PGD budgets 0..N 8-bit levels")
    g.add_argument("--attack_steps", type=POSITIVE_INT, default=10, help="PGD's steps")


def add_transfer(p):
    p.add_argument_group("transfer").add_argument(
        "--judges", nargs="+", default=None,
        help="more model files that judge the max-class images (e.g. a classifier trained with "
             "another seed)")


def add_compare(p):
    p.add_argument_group("compare").add_argument(
        "--runs", nargs="+", default=None,
        help="the run folders: training loss and test accuracy per epoch on one figure")


def add_all(p):
    p.add_argument("--extras", action="store_true",
                   help="also make attribute, attack and transfer, and the report's 'beyond the "
                        "assignment' pages")
    for add in (add_perturb, lambda q: add_ascent(q, features=True), add_samples,
                add_attribute, add_attack, add_transfer):
        add(p)


# Each figure: what it makes, and the options it reads (beyond the models and data).
FIGURES = {
    "all": ("perturb, max-class, max-features and samples for both discriminators and the "
            "generator that the run folder holds (with --extras also attribute, attack and "
            "transfer), then report", add_all),
    "perturb": ("real, gradient-sign and altered test images; accuracy against the gain",
                add_perturb),
    "max-class": ("an image that maximises each class output, from the mean test image",
                  add_ascent),
    "max-features": ("images that maximise the features of chosen layers",
                     lambda p: add_ascent(p, features=True)),
    "samples": ("the generator's samples by class, and interpolations", add_samples),
    "export": ("generated images as PNG files, for FID and IS (metrics.py)", add_export),
    "neighbours": ("test images and their nearest training images in a SimCLR encoder's "
                   "representation", add_neighbours),
    "compare": ("training loss and test accuracy of several classifier runs on one figure",
                add_compare),
    "attribute": ("saliency, integrated gradients and Grad-CAM of test images", add_attribute),
    "attack": ("accuracy under PGD against the budget, and a linear path's logits", add_attack),
    "transfer": ("how often other classifiers judge each max-class image its class",
                 lambda p: (add_ascent(p), add_transfer(p))),
    "report": ("report.pdf from the figures made so far (and the runs' logs and models)",
               lambda p: None),
}


def build_parser():
    p = ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="figure", required=True, metavar="FIGURE",
                           parser_class=ArgumentParser,
                           help="; ".join(f"{n}: {what}" for n, (what, _) in FIGURES.items()))
    for name, (what, add) in FIGURES.items():
        f = sub.add_parser(name, help=what, description=f"visualize.py {name}: {what}.")
        add_models(f)
        add(f)
    return p


def figure_parser(name):
    """The parser of one figure's subcommand (its flags alone)."""
    return build_parser()._subparsers._group_actions[0].choices[name]


def resolve(argv=None):
    """The command line resolved once into FigureOptions."""
    return FigureOptions.of(vars(build_parser().parse_args(argv)))


COMMANDS = {"perturb": run_perturb, "max-class": run_max_class,
            "max-features": run_max_features, "samples": run_samples, "export": run_export,
            "neighbours": run_neighbours, "compare": run_compare, "attribute": run_attribute,
            "attack": run_attack, "transfer": run_transfer}
EXTRAS = ("attribute", "attack", "transfer")  # all --extras adds them
ALL = ("perturb", "max-class", "max-features", "samples")  # what 'all' makes before the report


def check_layers(ctx):
    """Every --layers value names a layer of every chosen discriminator (before any work)."""
    for name in ctx.names if ctx.options.layers else []:
        depth = ctx.model(name)[0].depth
        bad = [k for k in ctx.options.layers if k > depth]
        if bad:
            raise UserError(f"--layers {bad[0]}: the {name} discriminator has layers 1 to {depth}")


def preflight(ctx, figures):
    """Load and check everything the figures read before anything is written, so that a missing
    or unfitting file is one line. Returns the figures to make: 'all' makes those the run's
    models allow, and says in a line what it leaves out."""
    args = ctx.options
    if args.figure in ("all", "report"):
        ctx.require_models()
    if args.param == "pixel" and (args.diversity or args.copies > 1):
        raise UserError("--diversity and --copies need --param fft (the pixel ascent starts "
                        "every copy from the same mean image)")
    needs_disc = [f for f in figures if f in ("perturb", "max-class", "max-features", *EXTRAS)]
    if needs_disc and not ctx.names:
        why = (f"no discriminator in {args.run_dir} (cifar10.model from train_baseline.py, "
               "discriminator.model from train_gan.py)")
        if args.figure != "all":
            raise UserError(f"{args.figure}: {why}")
        info(f"{', '.join(needs_disc)}: skipped: {why}")
        figures = [f for f in figures if f not in needs_disc]
    if args.figure == "all" and args.model == "both":
        for name in ("baseline", "gan"):
            if name not in ctx.names:
                info(f"{name} discriminator: skipped ({ctx.paths[name]} does not exist)")
    if args.figure == "all" and not os.path.isfile(ctx.paths["generator"]):
        info(f"samples: skipped ({ctx.paths['generator']} does not exist)")
        figures = [f for f in figures if f != "samples"]
    for name in ctx.names if needs_disc else []:
        ctx.model(name)  # say which files are missing or damaged before any long computation
    if "max-features" in figures:
        check_layers(ctx)
    if {"samples", "export"} & set(figures):
        ctx.model("generator")
    if {"perturb", "max-class", "max-features", *EXTRAS} & set(figures):
        ctx.batch()  # the test images, and every model checked against them
    if "transfer" in figures:
        ctx.check_judges()
    if "attribute" in figures:
        require("captum.attr", "visualize.py attribute")
        check_gradcam_layer(ctx)
    if "compare" in figures:
        for run in args.runs or []:
            read_history(run)
    return figures


def main(argv=None):
    args = resolve(argv)
    ctx = Context(args)
    figures = list(ALL) + list(EXTRAS) * args.extras if args.figure == "all" else [args.figure]
    figures = preflight(ctx, [f for f in figures if f != "report"])
    # one visualize.py at a time in a folder (an export's own folder for export)
    export = args.out_dir or os.path.join(args.run_dir, runfiles.EXPORT)
    target = export if args.figure == "export" else ctx.out_dir
    check_writable_folder(target)
    with FolderLock(target, "visualize.py"):
        remove_stale_temps(target)  # what a killed visualize.py left half written
        return make(args, ctx, figures)


def make(args, ctx, figures):
    """Make the figures, then the report; returns the final JSON line's figures."""
    times, result = {}, dict(script="visualize", figure=args.figure, out_dir=ctx.out_dir)
    for figure in figures:
        t0 = time.time()
        made = COMMANDS[figure](ctx)
        if made:
            result[figure] = made
        times[figure] = round(time.time() - t0, 2)
        info(f"{figure}: {times[figure]:.1f}s")
    result["seconds"] = times
    if args.figure in ("report", "all"):
        t0 = time.time()
        result["report"] = ctx.out(runfiles.REPORT)
        result["pages"] = build_report(ctx.run_dir, ctx.out_dir, result["report"], ctx.paths)
        times["report"] = round(time.time() - t0, 2)
    print(json.dumps(tidy(result)), flush=True)
    return result


if __name__ == "__main__":
    run_main(main)
