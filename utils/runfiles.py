"""The run folder's contract: the name of every file a run holds, and the rules that pick
among them, written once. The trainers write these; visualize.py, metrics.py and the report
read them.

    RUN/cifar10.model          train_baseline.py's classifier (the assignment's name, whatever
                               the dataset)
    RUN/discriminator.model    train_gan.py's networks; generator_ema.model with --ema, which
    RUN/generator.model        samples come from when it exists; generator_best.model with
                               --keep_best
    RUN/simclr.model           train_simclr.py's encoder
    RUN/KIND.ckpt, KIND_log.jsonl, KIND_config.json, KIND_curves.png   each trainer's (KIND:
                               baseline, gan, simclr)
    RUN/output/NNN.png         the GAN's grid of fixed noise after each epoch
    RUN/visualization/         visualize.py's figures, summary.json (their numbers) and
                               report.pdf
    RUN/export/                visualize.py export's PNG files
"""
import os

BASELINE_MODEL = "cifar10.model"
DISCRIMINATOR_MODEL = "discriminator.model"
GENERATOR_MODEL = "generator.model"
GENERATOR_EMA_MODEL = "generator_ema.model"
GENERATOR_BEST_MODEL = "generator_best.model"
SIMCLR_MODEL = "simclr.model"
GAN_MODELS = (GENERATOR_MODEL, DISCRIMINATOR_MODEL, GENERATOR_EMA_MODEL, GENERATOR_BEST_MODEL)
GRIDS = "output"
VISUALIZATION = "visualization"
SUMMARY = "summary.json"
REPORT = "report.pdf"
EXPORT = "export"

# the sample-quality figures that a classifier computes (--eval_classifier, --classifier)
CLASSIFIER_METRICS = ("cfid", "cprc", "cacc", "cconf")


def checkpoint(kind):
    return f"{kind}.ckpt"


def log(kind):
    return f"{kind}_log.jsonl"


def config(kind):
    return f"{kind}_config.json"


def curves(kind):
    return f"{kind}_curves.png"


def sampler(run_dir):
    """The generator a run's samples come from: the moving average (--ema) when the run has
    one, else the generator itself."""
    ema = os.path.join(run_dir, GENERATOR_EMA_MODEL)
    return ema if os.path.isfile(ema) else os.path.join(run_dir, GENERATOR_MODEL)


def needs_classifier(metrics):
    """Whether any of the chosen sample-quality figures needs a classifier."""
    return bool(set(CLASSIFIER_METRICS) & set(metrics))


def made_from(path, run_dir, digest):
    """What a figure records of a model file: its content hash and where it is, relative to
    the run folder when it lies inside it (so that a run copied or moved elsewhere checks its
    own files, not the ones it was copied from), else as an absolute path."""
    path, run_dir = os.path.abspath(path), os.path.abspath(run_dir)
    inside = os.path.commonpath([path, run_dir]) == run_dir
    return dict(file=os.path.relpath(path, run_dir) if inside else path, digest=digest)
