"""The command line every command shares: the parser, the flag types, the shared flags and
the speed flags, the recipe's defaults under the flags, the settings resolved from them
(utils/settings.py) and run_main (a user's mistake is one line and exit 2; the errors and exit
codes are utils.errors'). The library under utils/ never sees the command line."""
import argparse
import math
import os
import re
import sys

from models import ARCHITECTURES, default_width
from utils.errors import (EXIT_DIVERGED, EXIT_INTERRUPTED, EXIT_PEER_LOST, EXIT_USER_ERROR,
                          Diverged, Stopped, UserError)
from utils.runtime import SPEED_FLAGS
from utils.settings import RuntimeSettings, Settings


# ----------------------------------------------------------------------------- flags

def number(kind=float, low=None, high=None, low_open=False, high_open=False, what=None):
    """An argparse type: a finite number of `kind` in [low, high] (an end left out when
    *_open), so that nan, inf, a count of 0 and the like are one-line errors at parse time;
    what: the range in words, where the numbers would read badly."""
    if what is None:
        what = "a whole number" if kind is int else "a finite number"
        if low is not None and high is not None:
            what += f" in {'(' if low_open else '['}{low:g}, {high:g}{')' if high_open else ']'}"
        elif low is not None:
            what += f" {'>' if low_open else '>='} {low:g}"

    def parse(text):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be {what}, got '{text}'") from None
        if not math.isfinite(value) \
                or (low is not None and (value < low or (low_open and value == low))) \
                or (high is not None and (value > high or (high_open and value == high))):
            raise argparse.ArgumentTypeError(f"must be {what}, got '{text}'")
        return value

    parse.__name__ = what
    return parse


POSITIVE_INT = number(int, low=1)
COUNT = number(int, low=0)  # 0 allowed (e.g. "off")
POSITIVE = number(float, low=0, low_open=True)
NONNEGATIVE = number(float, low=0)
FRACTION = number(float, low=0, high=1, high_open=True)  # Adam's betas: [0, 1)
# what every generator takes: torch's manual_seed refuses more than 64 bits
SEED = number(int, low=0, high=2**63 - 1, what="a whole number from 0 to 2**63 - 1")


def color_jitter_flag(text):
    """--color_jitter: 'assignment' (drawn from --seed as the assignment does), 'off', or the
    four strengths brightness,contrast,saturation,hue (hue at most 0.5)."""
    if text in ("assignment", "off"):
        return text
    try:
        values = [float(v) for v in text.split(",")]
    except ValueError:
        values = []
    if len(values) != 4 or not all(math.isfinite(v) and v >= 0 for v in values) \
            or values[3] > 0.5:
        raise argparse.ArgumentTypeError(
            f"must be 'assignment', 'off' or four strengths >= 0 such as 0.1,0.1,0.1,0.05 "
            f"(hue at most 0.5), got '{text}'")
    return ",".join(f"{v:g}" for v in values)


class HelpFormatter(argparse.HelpFormatter):
    """Every flag's help ends with its default, unless the help already speaks of it."""

    def _get_help_string(self, action):
        text = action.help or ""
        if not action.option_strings or action.default is argparse.SUPPRESS \
                or "default" in text or isinstance(action, argparse._HelpAction):
            return text
        if isinstance(action, argparse._StoreTrueAction):
            return text + " (default: off)"
        return text + " (default: %(default)s)"


class ArgumentParser(argparse.ArgumentParser):
    """argparse that reports a bad flag in one line, accepts --a-b for every --a_b and shows
    every default in --help."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("formatter_class", HelpFormatter)
        super().__init__(*args, **kwargs)

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")

    def parse_known_args(self, args=None, namespace=None):
        args = list(sys.argv[1:] if args is None else args)
        known = self._option_string_actions
        for i, arg in enumerate(args):
            if arg == "--":
                break
            name, eq, value = arg.partition("=")
            snake = "--" + name[2:].replace("-", "_")
            if name.startswith("--") and name not in known and snake in known:
                args[i] = snake + eq + value
        parsed, rest = super().parse_known_args(args, namespace)
        for action in self._actions:  # a path or name given empty ('--out_dir ""'): no
            value = getattr(parsed, action.dest, None)  # default is empty, so it was typed
            if action.option_strings and isinstance(value, str) and not value.strip():
                self.error(f"argument {action.option_strings[-1]}: an empty value: give a "
                           "path or a name, or leave the flag out for its default")
        return parsed, rest


ADAM_ONLY = ("beta1", "beta2", "adam_step_cap")  # what another optimizer would ignore


def with_recipe(parser, recipes, argv=None):
    """Parse the flags over the defaults of the chosen --recipe (recipes: name -> Recipe), over
    the parser's own; --help shows the recipe's defaults too."""
    peek = argparse.ArgumentParser(add_help=False)
    peek.add_argument("--recipe", default=None)
    argv = list(sys.argv[1:] if argv is None else argv)
    chosen, _ = peek.parse_known_args(argv)
    if chosen.recipe in recipes:
        parser.set_defaults(**recipes[chosen.recipe].defaults)
    args = parser.parse_args(argv)
    adams = [k for k in ADAM_ONLY if k in vars(args) and vars(args)[k] != parser.get_default(k)]
    if getattr(args, "optimizer", "adam") != "adam" and adams:  # else it would go unused
        raise UserError(f"--{adams[0]} is Adam's, and --optimizer {args.optimizer} has no use "
                        "for it: leave it out, or use --optimizer adam")
    return args


def add_shared_flags(parser, *, epochs, lr, batch_size, dataset="cifar10", adam_step_cap=1024,
                     notes=None):
    """The flags every training script shares; each script passes its lesson's defaults (and,
    in notes, what it adds to a flag's help)."""
    g = parser.add_argument_group("shared flags (the same in every script)")
    notes = notes or {}

    def with_note(name, text):
        return f"{text}; {notes[name]}" if name in notes else text

    g.add_argument("--dataset", default=dataset,
                   help="dataset by name: cifar10, folder, digits, mnist, fashion_mnist, svhn")
    g.add_argument("--data_dir", default="./data",
                   help="where the dataset lives (cifar10 is downloaded here when missing; "
                        "for folder: the folder holding train/ and test/)")
    g.add_argument("--download_only", action="store_true",
                   help="fetch the dataset into --data_dir (and decode it into the cache), then "
                        "exit: on a cluster's login node, whose compute nodes have no internet")
    g.add_argument("--cache_dir", default=None,
                   help="where decoded image folders and the digits are cached "
                        "(default ~/.cache/cnn_gan)")
    g.add_argument("--out_dir", default=".", help="where models, checkpoints, logs and pictures go")
    g.add_argument("--epochs", type=POSITIVE_INT, default=epochs,
                   help=with_note("epochs", "training epochs"))
    g.add_argument("--batch_size", type=POSITIVE_INT, default=batch_size,
                   help="images per step: the global batch, split among torchrun's processes")
    g.add_argument("--lr", type=POSITIVE, default=lr,
                   help="the optimizer's learning rate, for the global batch: unchanged by the "
                        "number of processes (scale it yourself if you raise --batch_size)")
    g.add_argument("--arch", choices=tuple(ARCHITECTURES), default="ie534",
                   help="the family of networks (models.py): the assignment's ie534, dcgan "
                        "(seed 003), mlp and infogan (seed 004)")
    g.add_argument("--width", type=POSITIVE_INT, default=None,
                   help=with_note("width", "channels of the hidden layers (default the "
                                           "family's: ie534 196, dcgan and infogan 32, mlp 256)"))
    g.add_argument("--device", default="auto", help="auto (cuda when available), cpu, cuda, cuda:N")
    g.add_argument("--seed", type=SEED, default=0, help="seed of every random draw of the run")
    g.add_argument("--resume", nargs="?", const="yes", default="no",
                   help="continue from the checkpoint in --out_dir (or the path given); "
                        "'auto' resumes when a checkpoint exists and starts fresh otherwise")
    g.add_argument("--overwrite", action="store_true",
                   help="start fresh even though --out_dir holds a checkpoint of an earlier run")
    g.add_argument("--subset", type=POSITIVE_INT, default=None,
                   help="train on N training images (a seeded choice) for quick runs")
    g.add_argument("--augment", choices=("assignment", "flip", "none"), default="assignment",
                   help="training augmentation: the assignment's (random resized crop, colour "
                        "jitter, horizontal flip where the dataset allows it), the flip alone, "
                        "or none")
    g.add_argument("--color_jitter", type=color_jitter_flag, default="assignment",
                   help="training augmentation's ColorJitter: 'assignment' draws each strength "
                        "once from --seed as 0.1*randn, a negative draw turning that jitter off "
                        "(as the assignment's torchvision did); 'off'; or B,C,S,H")
    g.add_argument("--adam_step_cap", type=COUNT, default=adam_step_cap,
                   help=with_note("adam_step_cap", "IE 534's Adam overflow guard: a step count "
                                  "that reaches this is set back to cap-24, which makes every "
                                  "later update about 0.8 times plain Adam's (beta2 0.999); 0: "
                                  "plain Adam"))
    g.add_argument("--shuffle", choices=("on", "off"), default="on",
                   help="shuffle the training images every epoch (from --seed); off: the same "
                        "order every epoch, as a plain DataLoader")
    g.add_argument("--drop_last", choices=("on", "off"), default="on",
                   help="drop each epoch's last, smaller batch (the assignment's); off trains "
                        "it too (a last batch of a single image is still dropped: BatchNorm "
                        "cannot train on one)")
    g.add_argument("--log_every", type=POSITIVE_INT, default=50,
                   help="print and log one line every N steps")
    g.add_argument("--tensorboard", action="store_true",
                   help="also write the log's figures (and a GAN's grids) as TensorBoard events "
                        "under OUT_DIR/tensorboard (the tensorboard package)")
    g.add_argument("--stop_file", default=None,
                   help="stop as on SIGTERM (checkpoint, exit code 75) once this file exists; "
                        "the job scripts create it when the scheduler warns of the walltime")
    g.add_argument("--time_limit", type=POSITIVE, default=None,
                   help="stop as on SIGTERM after this many seconds (e.g. the walltime less a "
                        "margin)")
    return g


def add_speed_flags(parser, names=tuple(SPEED_FLAGS), training=False, defaults=None):
    """The speed flags; for a trainer (training=True) also --deterministic. defaults: a flag's
    default other than 'auto' (visualize.py's Part 2 runs in fp32: amp 'off')."""
    defaults = defaults or {}
    g = parser.add_argument_group("speed (auto: every one on CUDA; on the CPU bf16 autocast "
                                  "alone, where the CPU has bf16 units; each can be turned "
                                  "on or off alone)")
    for name in names:
        g.add_argument(f"--{name}", choices=("auto", "on", "off"),
                       default=defaults.get(name, "auto"), help=SPEED_FLAGS[name])
    if training:
        g.add_argument("--deterministic", action="store_true",
                       help="bit-reproducible runs on a GPU, so a resumed run equals an "
                            "uninterrupted one bit for bit: deterministic algorithms only, no "
                            "cuDNN autotuning (slower; the CPU is deterministic already)")
    return g


def resolve_shared(values):
    """What the parser cannot check alone, and the defaults that hang on other flags (the
    chosen family's width), on a dict of flag values: the values resolved."""
    from utils.data import DATASETS

    values = dict(values)
    if values.get("dataset") not in DATASETS:
        raise UserError(f"unknown dataset '{values.get('dataset')}'; choose one of "
                        f"{', '.join(DATASETS)}")
    if values.get("width") is None:
        values["width"] = default_width(values["arch"])
    for key in ("data_dir", "cache_dir"):  # recorded whole: commands read them from anywhere
        if values.get(key):
            values[key] = os.path.abspath(values[key])
    return values


def runtime_settings(args):
    """The RuntimeSettings of a command's parsed flags (those it has; the rest 'auto')."""
    names = RuntimeSettings.__dataclass_fields__
    return RuntimeSettings(**{k: v for k, v in vars(args).items() if k in names})


def download_only(settings, script):
    """--download_only: the dataset fetched and decoded as a run would read it, nothing
    trained; the final JSON line says where it is."""
    from utils.console import info, print_result
    from utils.data import load_dataset

    d = settings.data
    data = load_dataset(d.dataset, d.data_dir, d.cache_dir)
    info(f"{data.name}: {len(data.train_y)} training and {len(data.test_y)} test images in "
         f"{os.path.abspath(d.data_dir)}; nothing trained (--download_only)")
    print_result(script, dict(train=len(data.train_y), test=len(data.test_y)),
                 dataset=d.dataset, data_dir=os.path.abspath(d.data_dir))
    return {}


def resolve_settings(values, options=None):
    """A trainer's flags (a dict) as its typed, frozen settings, shared defaults resolved."""
    if values.get("tensorboard"):
        from utils.extras import require

        require("torch.utils.tensorboard", "--tensorboard")
    return Settings.resolve(resolve_shared(values), options)


PEER_WORDS = ("connection closed by peer", "connection reset by peer", "broken pipe",
              "gloo", "nccl", "socket timeout", "connection refused", "timed out")


def first_line(e):
    """An error's first sentence, without gloo's source location."""
    lines = str(e).strip().splitlines()
    text = re.sub(r"^\[[^\]]*\]\s*", "", lines[0] if lines else type(e).__name__)
    return text.split(". ")[0][:120]


def peer_lost(e):
    """Whether an error is the process group's: a peer of a torchrun job that went away."""
    import torch.distributed as dist

    several = os.environ.get("WORLD_SIZE", "1").strip() not in ("", "1")
    return several and (isinstance(e, getattr(dist, "DistError", ())) or
                        any(w in str(e).lower() for w in PEER_WORDS))


def run_main(main, argv=None):
    """Run a script's main; a user's mistake becomes one line on stderr and exit code 2."""
    try:
        return main(argv)
    except (UserError, Diverged) as e:  # DataError is a UserError
        print(f"error: {e}", file=sys.stderr)
        sys.exit(EXIT_DIVERGED if isinstance(e, Diverged) else EXIT_USER_ERROR)
    except Stopped as e:  # every rank stops together: rank 0 says so for them all
        if os.environ.get("RANK", "0").strip() in ("", "0"):
            print(str(e), file=sys.stderr)
        sys.exit(e.code)
    except RuntimeError as e:
        if not peer_lost(e):
            raise
        print(f"error: another process of this torchrun job stopped ({first_line(e)}): the "
              "last checkpoint is kept; find why in that process's output, then resume the job "
              "with --resume", file=sys.stderr)
        sys.exit(EXIT_PEER_LOST)
    except KeyboardInterrupt:  # a trainer's run says so itself (Run: --resume)
        print("interrupted (Ctrl-C): what was finished is kept, nothing half written; run the "
              "command again", file=sys.stderr)
        sys.exit(EXIT_INTERRUPTED)
