"""A trainer's run folder (--out_dir), held by one run at a time and at every instant either
the earlier run or the new one, whole, and its logs.

A fresh run over an earlier one writes its settings and log under staged names; just before
its first output it replaces the earlier run's files by its own, from a journal written
first, so the next start finishes a replacement a crash interrupted."""
import contextlib
import json
import os
import re
import time

from utils import runfiles
from utils.errors import UserError
from utils.files import (FolderLock, atomic_write_json, atomic_write_text, check_writable_folder,
                         io_error, read_json, remove_stale_temps)


class RunFolder:
    """The files of one trainer's run in a folder: kind names them (utils.runfiles);
    products are a finished run's (model files); patterns, regular expressions of more."""

    def __init__(self, folder, kind, products=(), patterns=()):
        self.folder, self.kind = folder, kind
        self.products, self.patterns = tuple(products), tuple(patterns)
        self.journal = self.path(f".{kind}.replace.json")
        self.staging, self.created, self.lock = False, False, None

    def path(self, name):
        return os.path.join(self.folder, name)

    @property
    def ckpt(self):
        return self.path(runfiles.checkpoint(self.kind))

    def own(self):
        """The run's fixed file names (relative to the folder), whether they exist or not."""
        return [runfiles.checkpoint(self.kind), runfiles.log(self.kind),
                runfiles.config(self.kind), runfiles.curves(self.kind), *self.products]

    def names(self):
        """The run's own file names (relative to the folder) that exist now."""
        found = [n for n in self.own() if os.path.isfile(self.path(n))]
        for pattern in (*self.patterns, rf"tensorboard/{self.kind}/events\.out\.tfevents\..+"):
            sub, _, rx = pattern.rpartition("/")
            try:
                entries = os.listdir(self.path(sub)) if sub else []
            except OSError:
                entries = []
            found += [f"{sub}/{e}" for e in sorted(entries) if re.fullmatch(rx, e)]
        return found

    def holds_results(self):
        """Whether the folder holds a checkpoint or a product of an earlier run."""
        return any(os.path.isfile(self.path(n)) for n in (runfiles.checkpoint(self.kind),
                                                             *self.products))

    # ------------------------------------------------------------------------- taking hold

    def take(self, main=True):
        """Make sure the folder can be written (before any data is loaded), hold its lock (rank
        0), finish a replacement a crash interrupted, and remove killed writers' leftovers."""
        if not main:
            return self
        self.created = not os.path.exists(self.folder)
        check_writable_folder(self.folder)
        # one trainer of each kind at a time; the classifier's and the GAN's (which write
        # different files) may share a folder, as the cluster jobs submitted together do
        self.lock = FolderLock(self.folder, f"{self.kind} run", name=self.kind).acquire()
        if os.path.isfile(self.journal):
            self._replace(self._read_journal())
        for name in os.listdir(self.folder):  # an interrupted --overwrite's staged files
            if name.startswith(f".{self.kind}_") and name.endswith(".staged"):
                with contextlib.suppress(OSError):
                    os.remove(self.path(name))
        remove_stale_temps(self.folder)
        return self

    def release(self, failed_early=False):
        """Let go of the lock; a folder this run created and never wrote into is removed."""
        if self.lock is not None:
            self.lock.release()
            self.lock = None
            if failed_early and self.created:
                with contextlib.suppress(OSError):
                    os.rmdir(self.folder)  # only when empty

    # ------------------------------------------------------------------------- replacing

    def begin_fresh(self):
        """A fresh run: stage its first files when an earlier run's are there."""
        self.staging = bool(self.names())

    def target(self, name):
        """Where one of the run's files is written now (its staged name while staging)."""
        return self.path(f".{name}.staged") if self.staging else self.path(name)

    def replace_earlier(self):
        """Before the new run's first output: the earlier run's files go, the staged ones take
        their names. Journaled, so that a crash in between is finished by the next start."""
        if not self.staging:
            return
        staged = [n for n in (runfiles.config(self.kind), runfiles.log(self.kind))
                  if os.path.isfile(self.path(f".{n}.staged"))]
        plan = {"remove": self.names(), "rename": [[f".{n}.staged", n] for n in staged]}
        atomic_write_json(self.journal, plan)
        self._replace(plan)
        self.staging = False

    def _read_journal(self):
        """The interrupted replacement's plan, keeping only what it may do: remove this run's
        own files, and rename its staged files to their names (nothing else is touched)."""
        try:
            plan = read_json(self.journal, {}, kind=dict)
        except UserError:
            plan = {}
        own = set(self.own())
        remove = [n for n in plan.get("remove", [])
                  if isinstance(n, str) and (n in own or n in self.names())]
        rename = [r for r in plan.get("rename", [])
                  if isinstance(r, list) and len(r) == 2 and r[1] in own
                  and r[0] == f".{r[1]}.staged"]
        return {"remove": remove, "rename": rename}

    def _replace(self, plan):
        for name in plan.get("remove", []):
            if os.path.isfile(self.path(f".{name}.staged")):
                continue  # the new run's own, about to take this name
            with contextlib.suppress(FileNotFoundError):
                os.remove(self.path(name))
        for src, dst in plan.get("rename", []):
            if os.path.isfile(self.path(src)):
                os.replace(self.path(src), self.path(dst))
        with contextlib.suppress(FileNotFoundError):
            os.remove(self.journal)


def check_resume_target(folder, resume_from, run_id_of):
    """--resume PATH writes into --out_dir: allowed when that is PATH's own folder, when the
    folder holds no results of a run, or when its checkpoint is the same run's (run ids)."""
    if (os.path.realpath(resume_from) == os.path.realpath(folder.ckpt)
            or not folder.holds_results()):
        return
    theirs = run_id_of(folder.ckpt) if os.path.isfile(folder.ckpt) else None
    if theirs is not None and theirs == run_id_of(resume_from):
        return
    raise UserError(f"--resume {resume_from}: {folder.folder} holds another run "
                    f"({', '.join(folder.names()[:3])}); resume into the checkpoint's own folder "
                    "or an empty --out_dir")


# ----------------------------------------------------------------------------- the log

def read_records(path):
    """The JSON objects of a JSON-lines log; a line a crash cut short is skipped."""
    records = []
    with contextlib.suppress(FileNotFoundError), open(path, encoding="utf-8") as f:
        for line in f:
            with contextlib.suppress(ValueError):
                record = json.loads(line)
                if isinstance(record, dict):
                    records.append(record)
    return records


def epoch_records(path):
    """A trainer's record of each epoch from its log, in order: the last one logged for each
    epoch (a resumed run logs an epoch again), and only well-formed ones (a whole epoch >= 1);
    a damaged line or record is left out."""
    epochs = {}
    for r in read_records(path):
        epoch = r.get("epoch")
        if r.get("event") == "epoch" and type(epoch) is int and epoch >= 1:
            epochs[epoch] = r
    return [epochs[k] for k in sorted(epochs)]


def _logged_by(record, position):
    """Whether a record belongs to training up to position = (completed epochs, steps of the
    next epoch): what a checkpoint at that position has seen."""
    epochs, steps = position
    if record.get("event") == "epoch":
        return record.get("epoch", 0) <= epochs
    if record.get("event") == "step":
        return (record.get("epoch", 0) - 1, record.get("step", 0)) <= (epochs, steps)
    return True  # resumptions, divergences: the run's history


class TensorBoardLog:
    """The JSON log's figures and the grids as TensorBoard events under RUN/tensorboard/KIND/,
    against the global step; held back until a replacement is done, and a resumed run hides
    what was logged after its checkpoint (purge_step), as the JSON log drops it."""

    def __init__(self, folder, kind, steps_per_epoch, resume_at=None):
        self.folder = os.path.join(folder, "tensorboard", kind)
        self.steps = steps_per_epoch
        # the first global step the checkpoint has not seen: TensorBoard hides it and later
        self.purge = None if resume_at is None else resume_at[0] * self.steps + resume_at[1] + 1
        self.writer, self.pending = None, []

    def open(self):
        """Start writing (once the run's files are its own): the records held back first."""
        if self.writer is not None:
            return
        from torch.utils.tensorboard import SummaryWriter

        try:
            self.writer = SummaryWriter(self.folder, purge_step=self.purge)
        except OSError as e:
            raise io_error(e, self.folder) from None
        for method, values in self.pending:
            method(*values)
        self.pending = []

    def _later(self, method, *args):
        if self.writer is None:
            self.pending.append((method, args))
            return True
        return False

    def scalars(self, record):
        event = record.get("event")
        if event not in ("step", "epoch") or self._later(self.scalars, record):
            return
        at = ((record["epoch"] - 1) * self.steps + record["step"] if event == "step"
              else record["epoch"] * self.steps)
        for key, value in record.items():
            if key not in ("event", "epoch", "step", "time") and isinstance(value, (int, float)):
                self.writer.add_scalar(f"{event}/{key}", value, at)
        self.writer.flush()

    def image(self, tag, images, epoch, nrow=10):
        """A grid of images in [-1, 1] (B, C, H, W), at the epoch's last step."""
        from torchvision.utils import make_grid

        if self._later(self.image, tag, images.detach().cpu(), epoch, nrow):
            return
        grid = make_grid(images.detach().float().cpu().add(1).div(2).clamp(0, 1), nrow=nrow)
        self.writer.add_image(tag, grid, epoch * self.steps)
        self.writer.flush()

    def close(self):
        if self.writer is not None:
            self.writer.close()


class JsonLog:
    """The run's JSON-lines log. A resumed run keeps only the records up to its checkpoint
    and marks the resumption, so that nothing is counted twice."""

    def __init__(self, folder, name, resume_at=None, tensorboard=None):
        """tensorboard: a TensorBoardLog that gets every record's figures too, or None."""
        self.folder, self.name, self.tensorboard = folder, name, tensorboard
        if resume_at is None:
            atomic_write_text(self.path, "")
            return
        kept = [r for r in read_records(self.path) if _logged_by(r, resume_at)]
        kept.append({"event": "resume", "epoch": resume_at[0] + 1, "step": resume_at[1]})
        atomic_write_text(self.path, "".join(json.dumps(r) + "\n" for r in kept))

    @property
    def path(self):
        return self.folder.target(self.name)  # its staged name until the run's first output

    def write(self, **record):
        record.setdefault("time", round(time.time(), 3))
        try:
            with open(self.path, "a", encoding="utf-8") as f:
                f.write(json.dumps(record) + "\n")
        except OSError as e:
            raise io_error(e, self.path) from None
        if self.tensorboard is not None:
            self.tensorboard.scalars(record)
