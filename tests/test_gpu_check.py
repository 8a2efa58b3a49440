"""jobs/gpu_check.py rehearsed on the CPU: every part's plumbing, the time limits, the summary's
schema, and a failing part that does not stop the others."""
import json
import os
import sys

import pytest
import torch
from conftest import ROOT, run_cli

sys.path.insert(0, os.path.join(ROOT, "jobs"))
import gpu_check  # noqa: E402


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    """The whole check in its CPU rehearsal, with the files a GPU machine would send back."""
    out = tmp_path_factory.mktemp("gpu_check")
    back = out / "back"
    code = gpu_check.main(["--device", "cpu", "--smoke", "--dataset", "digits",
                           "--out_dir", str(out / "check"), "--collect", str(back)])
    summary = json.load(open(out / "check" / "summary.json"))
    return code, summary, back


@pytest.mark.slow
def test_the_rehearsal_runs_every_part_and_writes_the_summary(smoke):
    code, s, _ = smoke
    assert code == 0, s["parts"]
    assert list(s["parts"]) == ["cuda_tests", "bench", "baseline", "gan", "visualize"]
    for key in ("gpu", "torch", "cuda", "cudnn", "python", "settings", "projected", "seconds"):
        assert key in s, key
    assert s["gpu"] is None and s["settings"]["smoke"] and s["settings"]["device"] == "cpu"
    parts = s["parts"]
    assert parts["cuda_tests"]["status"] == "skipped"  # no CUDA here: the file skips whole
    for name in ("bench", "baseline", "gan", "visualize"):
        assert parts[name]["status"] == "passed", (name, parts[name])
        assert 0 < parts[name]["seconds"] <= parts[name]["limit_s"] + gpu_check.GRACE_S + 30
    for job in ("baseline_step", "gan_iteration"):
        b = parts["bench"][job]
        assert b["fast_images_per_s"] > 0 and b["original_images_per_s"] > 0
        assert b["speedup"] == pytest.approx(b["fast_images_per_s"] / b["original_images_per_s"],
                                             abs=0.01)


@pytest.mark.slow
def test_the_trainers_stop_at_their_limit_and_leave_model_files(smoke):
    """Under --time_limit a trainer stops with a checkpoint; the check writes the model files
    from it, projects the full run from the epochs it timed, and Part 2 reads those files."""
    _, s, _ = smoke
    for name, epochs in (("baseline", 100), ("gan", 200)):
        p = s["parts"][name]
        assert 1 <= p["epochs_done"] < epochs, p  # the limit stopped it
        assert p["seconds_per_epoch"] > 0 and p["images_per_s"] > 0
        assert p["projected_s"] == pytest.approx(p["first_epoch_s"] + p["seconds_per_epoch"] *
                                                 (epochs - 1), abs=1)
        assert p["projected_for"] == f"{epochs} epochs"
        assert p["test_acc"] is not None and p["peak_mib"] > 0
    assert s["projected"] == {"baseline_100_epochs_s": s["parts"]["baseline"]["projected_s"],
                              "gan_200_epochs_s": s["parts"]["gan"]["projected_s"]}
    # no accuracy floor here: the limit decides how many epochs fit, so it would test the
    # machine's speed (test_baseline.py tests learning on real data)
    run = os.path.join(s["settings"]["out_dir"], "run")
    for f in ("cifar10.model", "generator.model", "discriminator.model"):
        assert os.path.isfile(os.path.join(run, f)), f
    assert s["parts"]["visualize"]["pages"] >= 5


@pytest.mark.slow
def test_the_files_to_bring_back_are_at_most_eight(smoke):
    _, s, back = smoke
    names = sorted(os.listdir(back))
    assert len(names) <= 8
    assert {"summary.json", "check.log", "report.pdf", "gan_grid.png", "baseline_curves.png",
            "gan_curves.png", "baseline_log.jsonl", "gan_log.jsonl"} == set(names)
    log = open(back / "check.log").read()
    for part in s["parts"]:
        assert f"===== {part}.log" in log


@pytest.mark.slow
def test_a_failing_part_and_a_part_past_its_limit_do_not_stop_the_others(tmp_path, capsys):
    def boom(s, limit, log):
        raise RuntimeError("planted failure")

    def slow(s, limit, log):  # a command that would run for a minute
        return gpu_check.run_command([sys.executable, "-c", "import time; time.sleep(60)"],
                                     limit, log)

    def bad_exit(s, limit, log):
        return gpu_check.run_command([sys.executable, "-c",
                                      "import sys; print('the cause'); sys.exit(3)"], limit, log)

    def fine(s, limit, log):
        return {"figure": 1.5}

    parts = [gpu_check.Part("boom", 10, 10, "raises", boom),
             gpu_check.Part("slow", 1, 1, "sleeps", slow),
             gpu_check.Part("bad_exit", 10, 10, "exits 3", bad_exit),
             gpu_check.Part("fine", 10, 10, "works", fine)]
    code = gpu_check.main(["--device", "cpu", "--smoke", "--out_dir", str(tmp_path)], parts)
    out = capsys.readouterr().out
    assert code == 1  # the command's exit status: not every part passed
    s = json.load(open(tmp_path / "summary.json"))
    p = s["parts"]
    assert p["boom"]["status"] == "failed" and "planted failure" in p["boom"]["error"]
    assert p["slow"]["status"] == "timeout" and p["slow"]["seconds"] < 10
    assert p["bad_exit"]["status"] == "failed" and "exit code 3" in p["bad_exit"]["error"]
    assert "the cause" in p["bad_exit"]["error"]
    assert p["fine"] == dict(status="passed", figure=1.5, seconds=p["fine"]["seconds"],
                             limit_s=10)
    final = json.loads(out.strip().splitlines()[-1])
    assert final["status"] == {"boom": "failed", "slow": "timeout", "bad_exit": "failed",
                               "fine": "passed"}


def test_the_limits_scale_and_a_bad_device_is_one_line(tmp_path, capsys):
    part = gpu_check.Part("x", 100, 5, "", None)
    s = gpu_check.Settings("cuda", None, "cifar10", str(tmp_path), False, 1.5, sys.executable)
    assert part.limit(s) == 150
    assert part.limit(gpu_check.Settings("cpu", None, "digits", str(tmp_path), True, 2.0,
                                         sys.executable)) == 10
    code, _, err = run_cli(gpu_check.main, ["--device", "tpu", "--out_dir", str(tmp_path)],
                           capsys)
    assert code == 2 and err.count("\n") == 1 and "--device tpu" in err
    if not torch.cuda.is_available():  # one line, before any part runs
        code, _, err = run_cli(gpu_check.main, ["--device", "cuda", "--out_dir",
                                                str(tmp_path / "c")], capsys)
        assert code == 2 and err.count("\n") == 1 and "CUDA is not available" in err, err
        assert not (tmp_path / "c").exists()


def test_pytest_counts_reads_the_closing_line():
    assert gpu_check.pytest_counts("x\n3 passed, 1 failed, 2 skipped in 4.2s\n") == \
        dict(passed=3, failed=1, skipped=2)
    assert gpu_check.pytest_counts("7 skipped in 0.1s") == dict(skipped=7)
    assert gpu_check.pytest_counts("no tests ran") == {}


def test_a_second_check_in_the_same_folder_is_one_line_and_relative_paths_hold(tmp_path, capsys,
                                                                                monkeypatch):
    from utils.files import FolderLock

    with FolderLock(str(tmp_path), "jobs/gpu_check.py"):
        code, _, err = run_cli(gpu_check.main, ["--device", "cpu", "--smoke",
                                                "--out_dir", str(tmp_path)], capsys)
    assert code == 2 and err.count("\n") == 1 and "gpu_check" in err, err
    seen = {}

    def record(s, limit, log):
        seen.update(data_dir=s.data_dir, out_dir=s.out_dir)
        return {}

    monkeypatch.chdir(tmp_path)
    os.makedirs("cifar", exist_ok=True)
    gpu_check.main(["--device", "cpu", "--smoke", "--data_dir", "cifar", "--out_dir", "check"],
                   [gpu_check.Part("record", 5, 5, "", record)])
    assert seen == dict(data_dir=str(tmp_path / "cifar"), out_dir=str(tmp_path / "check"))
