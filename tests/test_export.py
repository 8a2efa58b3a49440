"""An export is whole or says it is not: the earlier export stays complete until the new one
is written whole, an export cut short at any instant never reads as complete (metrics.py
refuses it), the next export finishes the job, killed writers' leftovers go, and nothing it
did not write is ever deleted."""
import json
import os

import pytest
import torch
from conftest import last_line, run_cli

import metrics
import visualize
from models import generator
from utils.figures import samples
from utils.figures.samples import EXPORT_MARK, STAGING, export_complete, export_samples
from utils.files import host_label


def G():
    torch.manual_seed(0)
    return generator("mlp", 16, 4, 1, 8).eval()


def pngs(folder):
    return sorted(f for f in os.listdir(folder) if f.endswith(".png"))


class Crash(Exception):
    pass


def crash_after(monkeypatch, where, calls):
    """Make `where` (module, name) raise on its call number `calls` (from 1)."""
    module, name = where
    real, seen = getattr(module, name), []

    def fails(*a, **k):
        seen.append(1)
        if len(seen) == calls:
            raise Crash("killed here")
        return real(*a, **k)

    monkeypatch.setattr(module, name, fails)


def test_a_whole_export_is_complete_and_replaces_only_its_own_files(tmp_path):
    out = str(tmp_path / "export")
    export_samples(G(), 12, 0, 0, "cpu", out)
    assert pngs(out) == [f"{i:05d}.png" for i in range(12)] and export_complete(out)
    assert json.load(open(os.path.join(out, EXPORT_MARK)))["complete"] is True
    export_samples(G(), 4, 0, 1, "cpu", out)
    assert pngs(out) == [f"{i:05d}.png" for i in range(4)] and export_complete(out)
    assert not os.path.exists(os.path.join(out, STAGING))


def test_an_export_cut_short_while_writing_leaves_the_earlier_one_whole(tmp_path, monkeypatch):
    out = str(tmp_path / "export")
    export_samples(G(), 12, 0, 0, "cpu", out)
    before = {f: open(os.path.join(out, f), "rb").read() for f in pngs(out)}
    from PIL import Image

    crash_after(monkeypatch, (Image.Image, "save"), 3)  # killed at the third new picture
    with pytest.raises(Crash):
        export_samples(G(), 20, 0, 1, "cpu", out)
    monkeypatch.undo()
    assert export_complete(out)  # the earlier export, untouched
    assert {f: open(os.path.join(out, f), "rb").read() for f in pngs(out)} == before
    export_samples(G(), 20, 0, 1, "cpu", out)  # the next export cleans up and finishes
    assert len(pngs(out)) == 20 and export_complete(out)
    assert not os.path.exists(os.path.join(out, STAGING))


# os.replace calls: 20 pictures written to staging, the mark that starts the swap, 20 moves,
# the mark that ends it; a crash at any of the swap's shows an incomplete export
@pytest.mark.parametrize("at", [22, 30, 42])
def test_an_export_cut_short_in_the_swap_never_reads_as_complete(tmp_path, monkeypatch,
                                                                 capsys, at):
    out = str(tmp_path / "export")
    export_samples(G(), 12, 0, 0, "cpu", out)
    crash_after(monkeypatch, (samples.os, "replace"), at)
    with pytest.raises(Crash):
        export_samples(G(), 20, 0, 1, "cpu", out)
    monkeypatch.undo()
    assert not export_complete(out)
    code, _, err = run_cli(metrics.main, [out, "--metrics", "cacc", "--classifier", "x"], capsys)
    assert code == 2 and "did not finish" in err and err.count("\n") == 1, err
    export_samples(G(), 20, 0, 1, "cpu", out)
    assert pngs(out) == [f"{i:05d}.png" for i in range(20)] and export_complete(out)


def test_a_png_the_export_did_not_write_is_refused_by_export_and_metrics(tmp_path, capsys):
    out = tmp_path / "export"
    export_samples(G(), 3, 0, 0, "cpu", str(out))
    (out / "99999.png").write_bytes(b"a user's picture")
    with pytest.raises(Exception, match="99999.png"):
        export_samples(G(), 3, 0, 0, "cpu", str(out))
    code, _, err = run_cli(metrics.main, [str(out), "--metrics", "cacc", "--classifier", "x"],
                           capsys)  # it would be measured as a fake
    assert "99999.png" in last_line(code, err) and "move them out" in err
    assert (out / "99999.png").read_bytes() == b"a user's picture" and len(pngs(out)) == 4


def test_a_damaged_mark_deletes_nothing(tmp_path):
    out = tmp_path / "export"
    export_samples(G(), 3, 0, 0, "cpu", str(out))
    for bad in ("[1]", '{"n": "all", "classes": 0}', '{"n": 3}', "{"):
        (out / EXPORT_MARK).write_text(bad)
        with pytest.raises(Exception, match="export into a new or empty folder"):
            export_samples(G(), 3, 0, 0, "cpu", str(out))
        assert len(pngs(out)) == 3


def test_killed_writers_leftovers_go_at_the_next_export(tmp_path):
    out = tmp_path / "export"
    export_samples(G(), 3, 0, 0, "cpu", str(out))
    (out / f".00001.png.cnn_gan.{host_label()}.999999.tmp.png").write_bytes(b"half")  # gone
    (out / STAGING).mkdir()
    (out / STAGING / "00007.png").write_bytes(b"half")
    export_samples(G(), 3, 0, 0, "cpu", str(out))
    assert sorted(os.listdir(out)) == sorted([EXPORT_MARK] + pngs(out))


def test_visualize_removes_killed_writers_leftovers_in_its_folder(tmp_path, capsys):
    import visualize
    from models import discriminator
    from utils.checkpoints import save_model

    run = tmp_path / "run"
    vis = run / "visualization"
    vis.mkdir(parents=True)
    save_model(str(run / "cifar10.model"), discriminator("mlp", 4, 10, 3, 32),
               {"dataset": "digits"}, {}, [str(i) for i in range(10)], "train_baseline.py")
    stale = vis / f".summary.json.cnn_gan.{host_label()}.999999.tmp"
    stale.write_text("{")  # a killed writer's (pid 999999: gone)
    (vis / "mine.txt").write_text("a user's note")
    code, _, err = run_cli(visualize.main, ["perturb", "--run_dir", str(run), "--max_gain", "1",
                                            "--batch_size", "8", "--device", "cpu"], capsys)
    assert code == 0, err
    assert not stale.exists() and (vis / "mine.txt").exists()


@pytest.mark.slow
def test_export_never_deletes_what_it_did_not_write(digits_gan, tmp_path, capsys):
    run, _ = digits_gan
    mine = tmp_path / "user"
    mine.mkdir()
    (mine / "00001.png").write_bytes(b"the user's own picture")
    code, _, err = run_cli(visualize.main, ["export", "--run_dir", str(run), "--n", "5",
                                            "--out_dir", str(mine)], capsys)
    assert "did not write" in last_line(code, err)
    assert (mine / "00001.png").read_bytes() == b"the user's own picture"
    out = tmp_path / "export"
    for n in (12, 4):  # a second export into its own folder replaces its own files only
        assert run_cli(visualize.main, ["export", "--run_dir", str(run), "--n", str(n),
                                        "--out_dir", str(out)], capsys)[0] == 0
        (out / "notes.txt").write_text("the user's note")
    pngs = sorted(f for f in os.listdir(out) if f.endswith(".png"))
    assert pngs == [f"{i:05d}_c{i}.png" for i in range(4)]
    assert (out / "notes.txt").exists()
