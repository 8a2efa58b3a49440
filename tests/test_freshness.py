"""A figure records the model file it was made from: where it is within the run folder and
the content hash of the bytes loaded. So a run copied elsewhere and retrained shows its old
figures as out of date, a run moved elsewhere keeps them current, and a model replaced while
a figure was being made does not pass for the figure's model."""
import json
import shutil

import pytest

from models import discriminator
from utils.checkpoints import save_model
from utils.figures.context import Context
from utils.figures.options import FigureOptions
from utils.figures.report import fresh


def classifier(path, seed):
    import torch

    torch.manual_seed(seed)
    save_model(str(path), discriminator("mlp", 4, 10, 1, 8), {"dataset": "digits"}, {},
               [str(i) for i in range(10)], "train_baseline.py")


def record(run):
    """Make a record as a figure does: load the classifier, then write its numbers."""
    ctx = Context(FigureOptions(run_dir=str(run), model="baseline", device="cpu"))
    ctx.model("baseline")
    return ctx


def saved(run, key="figure"):
    return json.load(open(run / "visualization" / "summary.json"))[key]


@pytest.fixture
def run(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    classifier(run / "cifar10.model", 0)
    record(run).record("figure", dict(value=1), uses=["baseline"])
    return run


def test_the_record_names_the_file_within_the_run(run):
    made = saved(run)["made_from"]["baseline"]
    assert made["file"] == "cifar10.model" and len(made["digest"]) == 16
    assert fresh(saved(run), {}, str(run))


def test_a_copied_run_retrained_shows_its_old_figures_out_of_date(run, tmp_path):
    copy = tmp_path / "copy"
    shutil.copytree(run, copy)
    classifier(copy / "cifar10.model", 1)  # retrained in the copy
    assert not fresh(saved(copy), {}, str(copy))
    assert fresh(saved(run), {}, str(run))  # the original is as it was


def test_a_moved_run_keeps_its_figures_current(run, tmp_path):
    moved = tmp_path / "moved" / "elsewhere"
    shutil.move(str(run), str(moved))
    assert fresh(saved(moved), {}, str(moved))


def test_records_of_earlier_versions_follow_a_moved_run(run, tmp_path):
    rec = saved(run)
    entry = rec["made_from"]["baseline"]
    rec["made_from"]["baseline"] = dict(path="/somewhere/gone/cifar10.model",
                                        digest=entry["digest"])  # the old form: a full path
    assert fresh(rec, {}, str(run))
    for damaged in ({"baseline": "not a dict"}, {"baseline": {"file": 3}}, [], None):
        assert not fresh(dict(rec, made_from=damaged), {}, str(run)), damaged


def test_a_model_replaced_while_the_figure_was_made_does_not_pass_for_it(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    classifier(run / "cifar10.model", 0)
    ctx = record(run)  # the figure loads the model ...
    classifier(run / "cifar10.model", 1)  # ... a trainer replaces it ...
    ctx.record("figure", dict(value=1), uses=["baseline"])  # ... and the figure is written
    assert not fresh(saved(run), {}, str(run))
