"""Classifier runs side by side: each run's training loss and test accuracy per epoch on one
figure (the batch-normalization lesson's comparison, seed 003, or any runs of
train_baseline.py), labelled by the settings that tell the runs apart."""
import json
import os

from utils import runfiles
from utils.checkpoints import RESUMABLE_CHANGES
from utils.console import info
from utils.errors import UserError
from utils.figures.context import style_axes
from utils.files import read_json
from utils.pictures import pyplot, save_plot
from utils.rundir import epoch_records

LOG, CONFIG = runfiles.log("baseline"), runfiles.config("baseline")


def read_history(run_dir):
    """A train_baseline.py run's epoch records, one per epoch (the last one logged wins, so an
    epoch a resumed run logged again counts once), and its settings."""
    log = os.path.join(run_dir, LOG)
    if not os.path.isfile(log):
        raise UserError(f"{run_dir} holds no {LOG}: compare reads the runs of train_baseline.py")
    epochs = epoch_records(log)  # a line cut short or damaged is left out
    if not epochs:
        raise UserError(f"{log} holds no finished epoch yet")
    try:
        settings = read_json(os.path.join(run_dir, CONFIG), {}, kind=dict)
    except UserError:
        settings = {}  # the labels fall back on the folder's name
    return epochs, settings


def run_labels(settings, folders):
    """One label per run: the settings that differ among the runs (where and how fast they ran
    aside), else the folder's name."""
    keys = sorted({k for s in settings for k in s} - RESUMABLE_CHANGES)
    differ = [k for k in keys if len({json.dumps(s.get(k)) for s in settings}) > 1]
    labels = [", ".join(f"{k} {s.get(k)}" for k in differ[:3]) or
              os.path.basename(os.path.abspath(d)) for s, d in zip(settings, folders)]
    if len(set(labels)) < len(labels):  # the same settings: the folders tell them apart
        labels = [f"{lab} ({os.path.basename(os.path.abspath(d))})"
                  for lab, d in zip(labels, folders)]
    return labels


def plot_compare(histories, labels, path):
    """Training loss and test accuracy per epoch, one line per run."""
    from matplotlib.ticker import MaxNLocator

    fig, axes = pyplot().subplots(1, 2, figsize=(10, 3.8))
    panels = (("training loss (cross-entropy)", "train_loss"), ("test accuracy (%)", "test_acc"))
    for ax, (title, key) in zip(axes, panels):
        for history, label in zip(histories, labels):
            points = [(r["epoch"], r[key]) for r in history if key in r]
            if points:
                ax.plot(*zip(*points), marker=".", label=label)
        style_axes(ax, title, "epoch", title_size=10)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    fig.tight_layout()
    save_plot(fig, path, dpi=100)


def run_compare(ctx):
    runs = ctx.options.runs
    if not runs:
        raise UserError("compare: name the runs with --runs DIR [DIR ...] (folders that "
                        "train_baseline.py wrote)")
    histories, settings = zip(*(read_history(d) for d in runs))
    labels = run_labels(settings, runs)
    path = ctx.out("compare.png")
    plot_compare(histories, labels, path)
    final = {}
    for label, history in zip(labels, histories):
        last = history[-1]
        final[label] = dict(epochs=last["epoch"], train_loss=last.get("train_loss"),
                            test_acc=last.get("test_acc"))
        info(f"compare: {label}: training loss {last.get('train_loss')}, test accuracy "
             f"{last.get('test_acc')}% after {last['epoch']} epochs")
    ctx.record("compare", dict(runs=list(runs), final=final), files=["compare.png"])
    return dict(figure=path, final=final)
