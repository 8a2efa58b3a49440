"""The SLURM job scripts on a real SLURM: a one-node cluster started for these tests
(jobs/slurm/local_cluster.sh), the project's own scripts submitted with only their edit lines
changed, on digits at a small width.

What each job must show, in order: SLURM's walltime warning (--signal=B:USR1@N) reaches
jobs/resumable.sh, which creates the stop file; the trainer writes a checkpoint and stops with
code 75; the job requeues itself (scontrol requeue); the requeued job resumes (--resume auto),
perhaps stopped and requeued again, and ends with exit code 0; and its final weights equal
those of an uninterrupted run of the same settings.

SLURM checks time limits every 30 s (measured: 30.05 s apart) and sends --signal's warning at
the first check that finds the job's end near. The trainer must be training when that check
comes, whatever the machine's speed and load, so the test times the first run of each job: a
probe job's warning gives the checks' phase; each job is submitted held and released so that
its trainer, which starts about as fast as its reference run did, is training a few seconds
before a check; in those seconds its time limit is brought forward (scontrol update
TimeLimit, as an administrator may), and that check sends the script's own warning. The edit
lines give a 5-minute limit, whose warning would come only after 2.5 minutes. The requeued
run gets that limit back and is not timed: it resumes and finishes. SLURM holds a requeued job for two minutes before
it may start again; the test lets it start at once (scontrol update StartTime=now).

The jobs spend most of their time waiting for those checks, so they start with the session
(conftest's slurm_jobs runs Jobs in a thread) and the other tests run meanwhile; the jobs'
sessions have nice 10 but from just before the warning until the first run ends; the
uninterrupted runs' too (_renice).
The packages are installed with apt-get when missing (as root); the tests skip, with the
reason, only where that is impossible.
"""
import itertools
import math
import os
import re
import shutil
import subprocess
import sys
import threading
import time

import pytest
import torch

from utils import runfiles

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CLUSTER = os.path.join(ROOT, "jobs", "slurm", "local_cluster.sh")
PACKAGES = ["slurmctld", "slurmd", "slurm-client", "munge"]
COMMANDS = ["munged", "slurmctld", "slurmd", "sbatch", "scontrol", "sinfo"]
# The lines a user is told to edit, as this one-node cluster needs them; every other line of
# the scripts is submitted as it is.
EDITS = {
    "--account": None,  # no accounts without an accounting database
    "--gres": None,  # no GPUs
    "--partition": "debug",
    "--nodes": "1",
    "--cpus-per-task": "1",
    "--mem": "1G",
    "--time": "00:05:00",
    "--signal": "B:USR1@120",
}
DIGITS = "--dataset digits --width 8 --batch_size 32 --lr 2e-3 --log_every 5 --seed 3"
# script: (trainer, its flags, processes, the files whose weights must match). Each trains for
# about 6 s alone at one thread (measured): it must train on for WINDOW_S after it is resumed,
# and then stop.
JOBS = {
    "baseline": ("train_baseline.py", DIGITS + " --subset 960 --epochs 14", 1,
                 ["cifar10.model"]),
    "gan": ("train_gan.py", DIGITS + " --subset 320 --epochs 8", 1,
            ["generator.model", "discriminator.model"]),
    "gan_multi": ("train_gan.py", DIGITS + " --subset 320 --epochs 8", 2,
                  ["generator.model", "discriminator.model"]),
}
FINAL = ("COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY",
         "PREEMPTED", "BOOT_FAIL", "DEADLINE")
TIMEOUT_S = 400
PERIOD_S = 30.05  # between SLURM's time-limit checks (measured)
WINDOW_S = 3  # a job is resumed, its limit brought forward, in the last seconds before a check
QUIET_NICE = 10  # a job's sessions while its trainer starts and in its requeued run (_renice)


def _install():
    """None when SLURM can run here (installing it if need be), else why not."""
    if not sys.platform.startswith("linux") or os.geteuid() != 0:
        return "a one-node SLURM needs Linux and root (its daemons, and apt-get)"
    if all(shutil.which(c, path=_path()) for c in COMMANDS):
        return None
    if shutil.which("apt-get") is None:
        return "SLURM is not installed and there is no apt-get to install it"
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    install = ["apt-get", "install", "-y", "-q", "--no-install-recommends", *PACKAGES]
    done = subprocess.run(install, env=env, capture_output=True, text=True)
    if done.returncode:  # the package lists may be missing or stale
        subprocess.run(["apt-get", "update", "-q"], env=env, capture_output=True)
        done = subprocess.run(install, env=env, capture_output=True, text=True)
    if done.returncode:
        last = (done.stderr.strip().splitlines() or ["no output"])[-1]
        return f"apt-get could not install {' '.join(PACKAGES)}: {last}"
    return None


def _path():
    """PATH with this Python's folder first (the jobs run `python` and `torchrun`) and the
    daemons' folder."""
    return os.pathsep.join([os.path.dirname(sys.executable), os.environ.get("PATH", ""),
                            "/usr/sbin", "/sbin"])


def start_cluster(folder):
    """A running one-node SLURM in folder, at nice 19 (its jobs inherit it): the environment
    its commands need. Where the kernel groups processes by session (autogroup), nice weighs
    only within a session, and each daemon and job starts its own, so the jobs still take a
    share of the cores; giving their sessions nice 19 too starved them past SLURM's one-minute
    limit (tried: the jobs ended in TIMEOUT)."""
    env = dict(os.environ, PATH=_path(), OMP_NUM_THREADS="1")
    started = subprocess.run(["nice", "-n", "19", CLUSTER, "start", str(folder)], env=env,
                             capture_output=True, text=True, timeout=120)
    assert started.returncode == 0, started.stderr + _logs(folder)
    env["SLURM_CONF"] = str(folder / "slurm.conf")
    return env


def _logs(folder):
    return "".join(f"\n--- {p.name}\n" + p.read_text()[-2000:] for p in folder.glob("*.log"))


def _split(text):
    """(lines before the edit block, the block, lines after it) of a job script."""
    lines = text.splitlines(keepends=True)
    first = next(i for i, line in enumerate(lines) if line.startswith("# ---- edit these"))
    last = next(i for i in range(first + 1, len(lines)) if re.fullmatch(r"# -+\n", lines[i]))
    return lines[:first], lines[first:last], lines[last:]


def edit(text, out_dir):
    """A job script with the lines of its edit block set for this cluster."""
    before, block, after = _split(text)
    edited = []
    for line in block:
        m = re.match(r"#SBATCH (--[a-z-]+)=", line)
        if m and m.group(1) in EDITS:
            if EDITS[m.group(1)] is not None:
                edited.append(f"#SBATCH {m.group(1)}={EDITS[m.group(1)]}\n")
        elif m and m.group(1) == "--output":
            edited.append(f"#SBATCH --output={out_dir}/%x-%j.out\n")
        else:
            edited.append(line)
    return "".join(before + edited + after)


def _job(job_id, env):
    """scontrol's fields of a job, as a dict."""
    shown = subprocess.run(["scontrol", "show", "job", "-o", str(job_id)], env=env,
                           capture_output=True, text=True)
    return dict(re.findall(r"(\w+)=(\S*)", shown.stdout))


def _stepd_alive(job_id):
    """Whether a slurmstepd of this job still runs on this machine (the one node)."""
    mark = f"slurmstepd: [{job_id}.".encode()
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                if f.read().startswith(mark):
                    return True
        except OSError:
            pass
    return False


def _reference(name, folder, env):
    """The same training without SLURM and without interruption."""
    trainer, flags, procs, _ = JOBS[name]
    cmd = [sys.executable, trainer]
    if procs > 1:
        cmd = [shutil.which("torchrun", path=env["PATH"]), "--standalone", "--nproc_per_node",
               str(procs), trainer]
    return subprocess.Popen(["nice", "-n", "19", *cmd, *flags.split(), "--out_dir", str(folder)],
                            cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
                            stderr=open(f"{folder}.err", "w"))


class Jobs:
    """The cluster started and every job submitted beside its uninterrupted reference, then all
    waited for, in a thread: conftest starts it with the session (the fixture slurm_jobs), so
    that the two minutes the jobs spend waiting for SLURM's 30-second ticks overlap the other
    tests. result() waits for it: {name: (the job's fields at the end, its output, run folder,
    reference folder)}."""

    def __init__(self, tmp_path_factory):
        self.factory, self.folder, self.ids, self.refs = tmp_path_factory, None, {}, {}
        self.outcome = None
        self.thread = threading.Thread(target=self._run, daemon=True)

    def start(self):
        self.thread.start()
        return self

    def _run(self):
        try:
            self.outcome = (True, self._submit_and_wait())
        except BaseException as e:  # pytest.skip and pytest.fail too: raised in result()
            self.outcome = (False, e)

    def result(self):
        self.thread.join()
        done, value = self.outcome
        if not done:
            raise value
        return value

    def close(self):
        """At the session's end: cancel what is left (a session cut short) and stop the
        cluster."""
        if self.folder is None:
            return
        env = dict(os.environ, PATH=_path(), SLURM_CONF=str(self.folder / "slurm.conf"))
        if self.ids:
            subprocess.run(["scancel", *self.ids.values()], env=env, capture_output=True)
        for p in self.refs.values():
            if p.poll() is None:
                p.kill()
        self.thread.join(timeout=60)
        subprocess.run([CLUSTER, "stop", str(self.folder)], env=env, capture_output=True,
                       timeout=60)

    def _submit_and_wait(self):
        why = _install()
        if why:
            pytest.skip(why)
        self.folder = self.factory.mktemp("slurm")
        cluster = start_cluster(self.folder)
        base = self.factory.mktemp("jobs")
        ticks = Ticks(_probe(cluster, base))
        refs, ids = self.refs, self.ids
        for name, (_, flags, procs, _) in JOBS.items():
            script = os.path.join(ROOT, "jobs", "slurm", f"{name}.sbatch")
            text = edit(open(script).read(), base)
            (base / f"{name}.sbatch").write_text(text)
            env = dict(cluster, RUN_DIR=str(run_dir(base, name)), EXTRA=flags,
                       GPUS_PER_NODE=str(procs))
            submitted = subprocess.run(["sbatch", "--parsable", str(base / f"{name}.sbatch")],
                                       cwd=ROOT, env=env, capture_output=True, text=True)
            assert submitted.returncode == 0, submitted.stderr
            ids[name] = submitted.stdout.strip().split(";")[0]
            ticks.watch(run_dir(base, name) / _stop_name(name))
        for name in JOBS:
            refs[name] = _reference(name, base / f"{name}-ref", cluster)
        cycles = {name: FirstCycle(ids[name], run_dir(base, name) / runfiles.log(_kind(name)),
                                   cluster) for name in JOBS}
        fields, quiet, deadline = {}, {}, time.time() + TIMEOUT_S
        for n in itertools.count():
            if time.time() > deadline or len(fields) == len(ids):
                break
            time.sleep(0.5)
            ticks.look()
            for cycle in cycles.values():
                cycle.step(ticks)
            if n % 2:  # the jobs' states once a second
                continue
            for p in refs.values():
                if p.poll() is None:
                    _renice(_tree(p.pid), QUIET_NICE)
            for name, job_id in ids.items():
                job = _job(job_id, cluster)
                if job.get("JobState") in FINAL:
                    fields[name] = job
                elif job.get("JobState") == "RUNNING":  # quiet, but while it is warned
                    warned = int(job.get("Restarts", 0)) == 0 and cycles[name].stage == "warned"
                    _renice(_job_pids(job_id, cluster), 0 if warned else QUIET_NICE)
                elif (job.get("JobState") == "PENDING" and job.get("Reason") == "BeginTime"
                      and int(job.get("Restarts", 0)) > 0 and not _stepd_alive(job_id)):
                    # Released only once the last run's slurmstepd has gone for a second: its
                    # report of the old batch script's end must not reach the new run. It gets
                    # its script's limit back, so that no early warning comes on a busy machine.
                    quiet.setdefault(name, time.time())
                    if time.time() - quiet[name] >= 1:
                        subprocess.run(["scontrol", "update", f"JobId={job_id}", "StartTime=now",
                                        f"TimeLimit={EDITS['--time']}"],
                                       env=cluster, capture_output=True)
                        quiet.pop(name)
                else:
                    quiet.pop(name, None)
        outputs = {name: "".join(p.read_text() for p in base.glob(f"*-{ids[name]}.out"))
                   for name in ids}
        if len(fields) < len(ids):
            subprocess.run(["scancel", *ids.values()], env=cluster, capture_output=True)
            pytest.fail(f"jobs unfinished after {TIMEOUT_S} s: " +
                        "\n".join(f"{n}: {_job(i, cluster)}\n{outputs[n][-3000:]}"
                                   for n, i in ids.items() if n not in fields))
        for name, p in refs.items():
            assert p.wait(timeout=TIMEOUT_S) == 0, open(f"{base / name}-ref.err").read()[-3000:]
        return {name: (fields[name], outputs[name], run_dir(base, name), base / f"{name}-ref",
                       cycles[name].note) for name in JOBS}


def _probe(cluster, folder):
    """A job that only notes when SLURM's first time-limit check after its start warns it:
    the phase of the checks. Returns the file it touches then."""
    mark = folder / "probe.warned"
    probe = subprocess.run(["sbatch", "--parsable", "--partition=debug", "--time=1",
                            "--signal=B:USR1@50", f"--output={folder}/probe-%j.out", "--wrap",
                            f"trap 'touch {mark}; exit 0' USR1; sleep 300 & wait"],
                           env=cluster, capture_output=True, text=True)
    assert probe.returncode == 0, probe.stderr
    return mark


class Ticks:
    """When SLURM checks time limits: every PERIOD_S, in a phase learnt from the files touched
    on a warning (the probe's, then each job's stop file)."""

    def __init__(self, mark):
        self.files, self.last = [mark], None

    def watch(self, path):
        self.files.append(path)

    def look(self):
        for path in self.files:
            try:
                seen = os.stat(path).st_mtime
            except OSError:
                continue
            self.last = seen if self.last is None else max(self.last, seen)

    def next(self, now):
        """The first check after `now` (None while the phase is unknown)."""
        if self.last is None:
            return None
        return self.last + math.floor((now - self.last) / PERIOD_S + 1) * PERIOD_S


def _kind(name):
    """The trainer a job runs, as its run files are named."""
    return "baseline" if name == "baseline" else "gan"


def _stop_name(name):
    return f"{_kind(name)}.STOP"  # the job scripts' name: one per trainer


def _training(log):
    """Whether a trainer has logged a step (the JSON-lines log: one line every --log_every)."""
    try:
        with open(log) as f:
            return '"event": "step"' in f.read()
    except OSError:
        return False


class FirstCycle:
    """A job's first run, timed against SLURM's checks: once its trainer is training, the job
    is suspended (scontrol suspend: SIGSTOP, as an administrator may) until a few seconds
    before a check, then resumed with a time limit whose warning that check sends. So the
    trainer is training at the warning whatever the machine's speed and load. Later runs go as
    SLURM runs them."""

    def __init__(self, job_id, log, cluster):
        self.job_id, self.log, self.env = job_id, log, cluster
        self.stage, self.suspended, self.note = "starting", False, ""

    def step(self, ticks):
        now = time.time()
        tick = ticks.next(now)
        near = tick is not None and tick - WINDOW_S <= now <= tick - 1
        if self.stage == "starting" and _training(self.log):
            self.stage = "training"
            if not near:
                self._scontrol("suspend", self.job_id)
                self.suspended = True
        if self.stage == "training" and near:
            _renice(_job_pids(self.job_id, self.env), 0)  # its warning is answered at once
            if self.suspended:
                self._scontrol("resume", self.job_id)
            limit = math.ceil((_seconds(_job(self.job_id, self.env)["RunTime"]) + 45) / 60)
            self._scontrol("update", f"JobId={self.job_id}", f"TimeLimit={limit}")
            self.stage = "warned"
            self.note = (f"{'suspended, resumed' if self.suspended else 'training'} and given "
                         f"{limit} min {tick - now:.1f} s before a check")

    def _scontrol(self, *args):
        done = subprocess.run(["scontrol", *args], env=self.env, capture_output=True, text=True)
        assert done.returncode == 0, (args, done.stderr)


def _job_pids(job_id, env):
    listed = subprocess.run(["scontrol", "listpids", job_id], env=env, capture_output=True,
                            text=True)
    return [line.split()[0] for line in listed.stdout.splitlines()[1:] if line.strip()]


def _tree(pid):
    """pid and its descendants."""
    children = {}
    for entry in os.listdir("/proc"):
        try:
            with open(f"/proc/{entry}/stat") as f:  # pid (comm) state ppid ...
                children.setdefault(int(f.read().rsplit(")", 1)[1].split()[1]), []).append(entry)
        except (OSError, ValueError, IndexError):
            continue
    found, todo = [], [str(pid)]
    while todo:
        found.append(todo.pop())
        todo += children.get(int(found[-1]), [])
    return found


def _renice(pids, nice):
    """Give the sessions of pids the nice `nice`. This kernel schedules by session (autogroup):
    a process's nice weighs only within its session, and each job, and each of torchrun's
    workers, runs in one of its own, so the cluster's nice 19 did not reach them and they took
    the cores from the other tests as peers. A session's nice of 0 or more is its owner's to
    set (others than root: ten times a second). Best effort: it only moves work to idle time.
    The session of pytest itself is left alone; a kernel without autogroups has no file."""
    try:
        with open("/proc/self/autogroup") as f:
            ours = f.read().split()[0]
    except (OSError, IndexError):
        return  # nice reaches the jobs as it is
    for pid in pids:
        try:
            with open(f"/proc/{pid}/autogroup", "r+") as f:
                if f.read().split()[0] != ours:
                    f.seek(0)
                    f.write(str(nice))
        except (OSError, IndexError):
            continue


def _seconds(run_time):
    """scontrol's RunTime ([D-]HH:MM:SS) in seconds."""
    days, _, clock = run_time.rpartition("-")
    h, m, s = (int(x) for x in clock.split(":"))
    return int(days or 0) * 86400 + h * 3600 + m * 60 + s


@pytest.fixture(scope="module")
def jobs(slurm_jobs):
    return slurm_jobs.result()


def run_dir(base, name):
    """The classifier's and the GAN's jobs share one run folder, as a student submits them
    (each trainer holds its own lock and stop file there); the multi-process GAN has its own."""
    return base / ("together" if name in ("baseline", "gan") else name)


@pytest.mark.slow
@pytest.mark.parametrize("name", list(JOBS))
def test_job_is_warned_checkpointed_requeued_and_resumed_exactly(name, jobs):
    job, out, run, ref, timing = jobs[name]
    stop = run / _stop_name(name)
    assert (job["JobState"], job["ExitCode"]) == ("COMPLETED", "0:0"), out[-3000:]
    restarts = int(job["Restarts"])
    assert restarts >= 1, (timing, out[-3000:])
    # every cycle but the last: the warning, the trainer's checkpoint, the requeue; then
    # the last cycle resumes and finishes
    warned = "resumable.sh: scheduler warning, asking the trainer to stop"
    requeued = f"resumable.sh: stopped with a checkpoint (code {75 if JOBS[name][2] == 1 else 1}"
    cycles = out.split("resumable.sh: stopped with a checkpoint")
    assert len(cycles) == restarts + 1, out[-3000:]
    for cycle in cycles[:-1]:
        if JOBS[name][2] == 1:  # (with two, rank 0 may learn of it from rank 1, silently)
            assert f"found {stop}: stopping after this step" in cycle, cycle
        assert warned in cycle and re.search(r"stopped (at epoch \d+, step \d+|after epoch "
                                             r"\d+); resume with --resume", cycle), cycle
        assert cycle.index(warned) < cycle.index("; resume with --resume"), cycle
    assert out.count(requeued) == restarts, out[-3000:]
    assert out.count(f"scontrol requeue {job['JobId']}") == restarts
    assert len(re.findall(r"resuming \S+ at epoch \d+, step \d+", out)) == restarts, out
    # the last run resumes and finishes (a warning that comes as it ends changes nothing)
    last = cycles[-1]
    assert "resuming" in last and "; resume with --resume" not in last, last
    result = [line for line in out.splitlines() if line.startswith('{"script": ')]
    assert len(result) == 1 and f'"epochs": {JOBS[name][1].split("--epochs ")[1]}' in result[0]
    assert not stop.exists()
    for file in JOBS[name][3]:
        a = torch.load(run / file, weights_only=True)["model"]
        b = torch.load(ref / file, weights_only=True)["model"]
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), file


@pytest.mark.slow
def test_only_the_edit_lines_change():
    for name in JOBS:
        text = open(os.path.join(ROOT, "jobs", "slurm", f"{name}.sbatch")).read()
        new = edit(text, "/tmp/out")
        (head, block, tail), (new_head, new_block, new_tail) = _split(text), _split(new)
        assert (new_head, new_tail) == (head, tail) and new_block != block
        changed = set(new_block) - set(block)
        assert all(line.startswith("#SBATCH --") for line in changed), changed
        assert "#SBATCH --time=00:05:00\n" in new_block and "--gres" not in new
