"""The project on a GPU node, checked and measured in one command of about 8 minutes: the CUDA
tests, bench.py, the assignment's classifier and ACGAN + WGAN-GP at width 196 on the real
CIFAR-10 under time limits, Part 2 on both, and one summary JSON.

    python jobs/gpu_check.py --data_dir ../data/cifar10               # on a fresh GPU node
    python jobs/gpu_check.py --data_dir D --scale 2                   # a slower GPU: 2x each limit
    python jobs/gpu_check.py --device cpu --smoke --dataset digits    # the CPU rehearsal (~40 s)

Each part is a process under its own time limit; one that fails or runs out of time is recorded
and the next runs. The parts, the summary and the device tool's calls: docs/speed.md.
"""
import argparse
import glob
import json
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from flags import POSITIVE, HelpFormatter, run_main  # noqa: E402
from utils.console import info
from utils.errors import UserError
from utils.files import (FolderLock, atomic_path, atomic_write_json,  # noqa: E402
                         atomic_write_text, check_writable_folder)
from utils.rundir import epoch_records

BASELINE_EPOCHS, GAN_EPOCHS = 100, 200  # the assignment's full runs
GRACE_S = 15  # after a part's limit: SIGTERM (a trainer checkpoints), then SIGKILL
# --smoke: epochs of 8 steps and trainers stopped after 4 s, so that an epoch ends in time
# on a busy CPU; the part's limit leaves room for starting, the resume and slow machines
SMOKE_SUBSET, SMOKE_BATCH, SMOKE_TRAIN_S = 256, 32, 4


@dataclass(frozen=True)
class Settings:
    """The check's resolved settings (saved in the summary)."""
    device: str
    data_dir: str
    dataset: str
    out_dir: str
    smoke: bool
    scale: float
    python: str
    collect: str = None

    def trainer_flags(self):
        data = ["--data_dir", self.data_dir] if self.data_dir else []
        smoke = ["--subset", str(SMOKE_SUBSET), "--batch_size", str(SMOKE_BATCH)] \
            if self.smoke else []
        return ["--device", self.device, *data, "--dataset", self.dataset,
                "--width", "8" if self.smoke else "196", "--out_dir", self.run_dir,
                "--cache_dir", os.path.join(self.out_dir, "cache"), "--log_every", "100", *smoke]

    @property
    def run_dir(self):
        return os.path.join(self.out_dir, "run")


@dataclass
class Part:
    """One part of the check: its time limit (seconds on one H100; --smoke's own)."""
    name: str
    seconds: float
    smoke_seconds: float
    what: str
    run: object = field(repr=False, default=None)  # run(settings, limit, log) -> figures dict

    def limit(self, s):
        return (self.smoke_seconds if s.smoke else self.seconds) * s.scale


class PartFailed(Exception):
    """A part's command failed: the message is its last line of output."""


def run_command(argv, limit, log, ok_codes=(0,)):
    """Run argv as a process group with stdout and stderr appended to log; past `limit`
    seconds it gets SIGTERM, then SIGKILL. Returns (exit code, stdout); raises PartFailed
    for an exit code not in ok_codes and TimeoutError when the limit ran out."""
    with open(log, "a") as f:
        f.write(f"$ {' '.join(argv)}\n")
        f.flush()
        proc = subprocess.Popen(argv, cwd=ROOT, stdout=subprocess.PIPE, stderr=f, text=True,
                                start_new_session=True)
        try:
            out, _ = proc.communicate(timeout=max(limit, 1))
        except subprocess.TimeoutExpired:
            stop_group(proc)
            out = proc.communicate()[0]
            f.write(out)
            raise TimeoutError(f"ran past its limit of {limit:.0f} s") from None
        except KeyboardInterrupt:  # the part runs in a session of its own: stop it too
            stop_group(proc)
            raise
        f.write(out)
    if proc.returncode not in ok_codes:
        raise PartFailed(f"exit code {proc.returncode}: {last_line(log)}")
    return proc.returncode, out


def stop_group(proc):
    """SIGTERM to the whole process group (trainers checkpoint on it), SIGKILL after GRACE_S."""
    for sig, wait in ((signal.SIGTERM, GRACE_S), (signal.SIGKILL, None)):
        try:
            os.killpg(proc.pid, sig)
            proc.wait(timeout=wait)
            return
        except ProcessLookupError:
            return
        except subprocess.TimeoutExpired:
            pass


def last_line(path):
    """The last non-empty line of a log (the error a command ended with)."""
    try:
        with open(path, errors="replace") as f:
            lines = [line.strip() for line in f if line.strip()]
    except OSError:
        return ""
    return lines[-1][:300] if lines else ""


def final_json(stdout):
    """A script's final JSON line (the last line of its stdout), or {}."""
    for line in reversed(stdout.strip().splitlines()):
        try:
            value = json.loads(line)
        except ValueError:
            continue
        return value if isinstance(value, dict) else {}
    return {}


# ----------------------------------------------------------------------------- the parts

def cuda_tests(s, limit, log):
    code, out = run_command([s.python, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                             "tests/test_cuda.py"], limit, log, ok_codes=(0, 1, 5))
    counts = pytest_counts(out)
    if code == 1 or counts.get("failed") or counts.get("error"):
        failed = [line.split(" ")[1] for line in out.splitlines() if line.startswith("FAILED ")]
        raise PartFailed(f"{counts.get('failed', 0)} failed, {counts.get('passed', 0)} passed: "
                         f"{', '.join(failed) or 'see the log'}")
    if not counts.get("passed"):
        return dict(counts, status="skipped", note="no test ran: no CUDA device")
    return counts


def pytest_counts(out):
    """{'passed': N, 'failed': N, 'skipped': N, ...} from pytest's closing line."""
    lines = [line for line in out.splitlines() if re.search(r"\d+ (passed|failed|skipped|"
                                                           r"error|deselected)", line)]
    if not lines:
        return {}
    return {k: int(n) for n, k in re.findall(r"(\d+) (passed|failed|skipped|errors?|xfailed|"
                                              r"xpassed|deselected)", lines[-1])}


def bench(s, limit, log):
    size = (["--width", "8", "--batch_size", "16", "--steps", "2", "--warmup", "1",
             "--original_workers", "0"] if s.smoke else ["--steps", "30", "--warmup", "10"])
    _, out = run_command([s.python, "bench.py", "--device", s.device, "--which", "baseline",
                          "gan", *size], limit, log)
    res = final_json(out)
    return {job: dict(fast_images_per_s=res[job]["fast"]["images_per_s"],
                      original_images_per_s=res[job]["original"]["images_per_s"],
                      speedup=res[job]["speedup"], fast_peak_mib=res[job]["fast"]["peak_mib"],
                      compile_s=res[job]["fast"]["first_s"])
            for job in ("baseline_step", "gan_iteration")}


def train(s, limit, log, kind, epochs):
    """train_{kind}.py under --time_limit (the part's limit less a margin for starting, saving
    and finishing; SMOKE_TRAIN_S with --smoke), then, when it stopped early, its model files
    written from the checkpoint (--resume with the epochs done, under what is left of the
    limit, 20 s at least).
    Returns its figures and the projection to `epochs` epochs."""
    script, flags = f"train_{kind}.py", s.trainer_flags()
    started, budget = time.monotonic(), SMOKE_TRAIN_S if s.smoke else max(limit - 30, 1)
    run_command([s.python, script, *flags, "--epochs", str(epochs), "--overwrite",
                 "--time_limit", str(budget)], limit, log, ok_codes=(0, 75))
    records = epoch_records(os.path.join(s.run_dir, f"{kind}_log.jsonl"))
    if not records:
        raise PartFailed(f"no epoch finished within {limit:.0f} s: {last_line(log)}")
    done = records[-1]["epoch"]
    if done < epochs:  # stopped by the limit: the model files from the checkpoint
        run_command([s.python, script, *flags, "--epochs", str(done), "--resume"],
                    max(limit - (time.monotonic() - started), 20), log)
    images = (SMOKE_SUBSET // SMOKE_BATCH * SMOKE_BATCH if s.smoke  # per epoch (drop_last)
              else 50000 // 128 * 128)
    seconds = [r["seconds"] for r in records]
    # the median epoch after the first, rounded as shown: the projection is what a reader of
    # the summary would work out from its figures
    steady = round(statistics.median(seconds[1:]) if len(seconds) > 1 else seconds[0], 2)
    return dict(epochs_done=done, epochs_asked=epochs, first_epoch_s=seconds[0],
                seconds_per_epoch=steady,
                images_per_s=round(images / steady, 1) if steady else None,
                test_acc=records[-1].get("test_acc"),
                best_test_acc=max((r.get("test_acc") or 0) for r in records),
                peak_mib=max((r.get("peak_mib") or 0) for r in records),
                projected_s=round(seconds[0] + steady * (epochs - 1)),
                projected_for=f"{epochs} epochs")


def visualize(s, limit, log):
    smoke = ["--steps", "20", "--layers", "2", "8"] if s.smoke else []
    _, out = run_command([s.python, "visualize.py", "all", "--run_dir", s.run_dir,
                          "--device", s.device, "--amp", "off",
                          "--cache_dir", os.path.join(s.out_dir, "cache"), *smoke], limit, log)
    res = final_json(out)
    return dict(pages=len(res.get("pages") or []), report=res.get("report"),
                figure_seconds=res.get("seconds"))


def default_parts():
    """The parts in the order they run."""
    return [
        Part("cuda_tests", 90, 60, "tests/test_cuda.py", cuda_tests),
        Part("bench", 80, 60, "bench.py: fast path against the original way", bench),
        Part("baseline", 150, 30, "the classifier, width 196, up to 100 epochs",
             partial(train, kind="baseline", epochs=BASELINE_EPOCHS)),
        Part("gan", 90, 30, "ACGAN + WGAN-GP, width 196, the epochs that fit",
             partial(train, kind="gan", epochs=GAN_EPOCHS)),
        Part("visualize", 60, 90, "visualize.py all on both, fp32, the report", visualize),
    ]


# ----------------------------------------------------------------------------- the summary

def environment(device):
    import torch

    env = dict(torch=torch.__version__, cuda=torch.version.cuda, python=sys.version.split()[0],
               cudnn=torch.backends.cudnn.version() if torch.backends.cudnn.is_available()
               else None, gpu=None, gpu_memory_gib=None)
    if device != "cpu" and torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        env.update(gpu=props.name, gpu_memory_gib=round(props.total_memory / 2**30, 1))
    return env


def projections(parts):
    return {what: parts[name].get("projected_s")
            if parts.get(name, {}).get("status") == "passed" else None
            for name, what in (("baseline", "baseline_100_epochs_s"), ("gan", "gan_200_epochs_s"))}


def run_check(s, parts=None):
    """Every part in turn, each under its limit; the summary rewritten after each."""
    parts = default_parts() if parts is None else parts
    logs = os.path.join(s.out_dir, "logs")
    os.makedirs(logs, exist_ok=True)
    summary_path = os.path.join(s.out_dir, "summary.json")
    summary = dict(settings=asdict(s), **environment(s.device), parts={}, projected={},
                   started=time.strftime("%Y-%m-%dT%H:%M:%S%z"), seconds=None)
    t_all = time.monotonic()
    for part in parts:
        limit = part.limit(s)
        log = os.path.join(logs, f"{part.name}.log")
        open(log, "w").close()
        info(f"gpu_check: {part.name} ({part.what}), limit {limit:.0f} s")
        t0 = time.monotonic()
        try:
            figures = part.run(s, limit, log) or {}
            record = dict(status=figures.pop("status", "passed"), **figures)
        except TimeoutError as e:
            record = dict(status="timeout", error=str(e))
        except Exception as e:  # a part's own failure, recorded; the next part runs
            record = dict(status="failed", error=f"{type(e).__name__}: {e}"
                          if not isinstance(e, PartFailed) else str(e))
        record.update(seconds=round(time.monotonic() - t0, 1), limit_s=round(limit))
        summary["parts"][part.name] = record
        summary["projected"] = projections(summary["parts"])
        summary["seconds"] = round(time.monotonic() - t_all, 1)
        atomic_write_json(summary_path, summary)
        info(f"gpu_check: {part.name} {record['status']} in {record['seconds']:.0f} s"
             + (f": {record['error']}" if "error" in record else ""))
    if s.collect:
        collect(s, summary_path)
    return summary


def collect(s, summary_path):
    """The files worth reading (8 at most, one folder): the summary, every part's log in one,
    both curves, the GAN's last grid, both JSON-lines logs and the report."""
    logs = sorted(glob.glob(os.path.join(s.out_dir, "logs", "*.log")))
    atomic_write_text(os.path.join(s.collect, "check.log"), "".join(
        f"===== {os.path.basename(path)}\n" + Path(path).read_text(errors="replace")
        for path in logs))
    grids = sorted(glob.glob(os.path.join(s.run_dir, "output", "*.png")),
                   key=lambda p: int(os.path.basename(p).split(".")[0]))
    picks = [(summary_path, "summary.json"),
             *((os.path.join(s.run_dir, name), name) for name in (
                 "baseline_curves.png", "gan_curves.png", "baseline_log.jsonl", "gan_log.jsonl")),
             (os.path.join(s.run_dir, "visualization", "report.pdf"), "report.pdf")]
    if grids:
        picks.append((grids[-1], "gan_grid.png"))
    for src, name in picks:
        if os.path.isfile(src):
            with atomic_path(os.path.join(s.collect, name)) as tmp:
                shutil.copyfile(src, tmp)


# ----------------------------------------------------------------------------- the command

def build_parser():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=HelpFormatter)
    p.add_argument("--device", default="cuda", help="cuda, cuda:N, or cpu for the rehearsal")
    p.add_argument("--data_dir", default=None,
                   help="the CIFAR-10 copy the trainers read (default: torchvision's download "
                        "into ./data)")
    p.add_argument("--dataset", default="cifar10",
                   help="the trainers' dataset (the rehearsal uses digits, offline)")
    p.add_argument("--out_dir", default="runs/gpu_check",
                   help="where the runs, the logs and summary.json go (replaced)")
    p.add_argument("--smoke", action="store_true",
                   help=f"the rehearsal: width 8, {SMOKE_SUBSET} images, seconds per part")
    p.add_argument("--scale", type=POSITIVE, default=1.0,
                   help="multiply every part's time limit (2 for a GPU half an H100's speed)")
    p.add_argument("--collect", default=None,
                   help="copy the 8 files worth reading into this folder at the end")
    p.add_argument("--python", default=sys.executable, help="the Python that runs the parts")
    return p


def main(argv=None, parts=None):
    a = build_parser().parse_args(argv)
    if a.device != "cpu" and not a.device.startswith("cuda"):
        raise UserError(f"--device {a.device}: the check is for cuda (or cpu with --smoke)")
    if a.device.startswith("cuda"):  # said now, not by every part in turn
        import torch

        if not torch.cuda.is_available():
            raise UserError(f"--device {a.device}: CUDA is not available on this machine; run "
                            "the check on a GPU node, or rehearse it with --device cpu --smoke")
    check_writable_folder(a.out_dir)
    # the parts run from the project's root: every path given is made absolute first
    absolute = lambda p: None if p is None else os.path.abspath(p)  # noqa: E731
    s = Settings(a.device, absolute(a.data_dir), a.dataset, absolute(a.out_dir), a.smoke,
                 a.scale, a.python, absolute(a.collect))
    with FolderLock(s.out_dir, "jobs/gpu_check.py"):  # one check at a time in a folder
        info("gpu_check: " + json.dumps(asdict(s)))
        summary = run_check(s, parts)
    print(json.dumps(dict(script="gpu_check", **{k: summary[k] for k in
                                                  ("gpu", "torch", "cuda", "seconds")},
                          status={k: v["status"] for k, v in summary["parts"].items()},
                          projected=summary["projected"])), flush=True)
    return 1 if any(v["status"] in ("failed", "timeout") for v in summary["parts"].values()) else 0


if __name__ == "__main__":
    sys.exit(run_main(main))
