"""What a run writes while it trains (rank 0 only; on other ranks every method does nothing
but `kept`): the settings file, the JSON-lines and TensorBoard logs, the checkpoint and the
curves, all in its RunFolder."""
import json
import os
import time
from dataclasses import dataclass

from utils import runfiles
from utils.checkpoints import atomic_save
from utils.console import info
from utils.errors import UserError
from utils.files import atomic_write_text
from utils.rundir import JsonLog, RunFolder, TensorBoardLog

PLOT_SECONDS = 60.0  # the curves are redrawn at most this often, and at the end


@dataclass
class Recorder:
    folder: RunFolder  # rank 0 holds its lock
    kind: str  # the trainer's: its files are KIND.ckpt, KIND_log.jsonl, KIND_config.json
    config: dict  # the resolved settings, flat (as saved)
    run_id: str  # the same through every resumption of a run
    main: bool = True
    saved_at: tuple = None  # (epoch, step) of the last checkpoint on disk
    tensorboard: TensorBoardLog = None
    log: JsonLog = None
    plotted: tuple = (0, float("-inf"))  # (epochs in the curves, when they were drawn)

    def open(self, tensorboard, steps_per_epoch, resume_at=None):
        """Save the settings and open the logs (resume_at: the checkpoint's (epoch, step), or
        None for a fresh run, which stages its files until its first output)."""
        if resume_at is not None:
            self.saved_at = tuple(resume_at)
        if not self.main:
            return
        if resume_at is None:
            self.folder.begin_fresh()
        atomic_write_text(self.folder.target(runfiles.config(self.kind)),
                          json.dumps(self.config, indent=2) + "\n")
        out_dir = self.folder.folder
        if tensorboard:
            self.tensorboard = TensorBoardLog(out_dir, self.kind, steps_per_epoch,
                                              resume_at=resume_at)
            info(f"TensorBoard events: {self.tensorboard.folder} (tensorboard --logdir "
                 f"{os.path.join(out_dir, 'tensorboard')})")
            if not self.folder.staging:  # else once the earlier run's files are gone
                self.tensorboard.open()
        self.log = JsonLog(self.folder, runfiles.log(self.kind), resume_at=resume_at,
                           tensorboard=self.tensorboard)

    def outputs_begin(self):
        """Before the run's first output: a fresh run replaces the earlier run's files now."""
        self.folder.replace_earlier()
        if self.tensorboard is not None:
            self.tensorboard.open()

    def checkpoint(self, state, epoch, step=0):
        """Write the checkpoint (`state`: a dict of plain data and state dicts) atomically."""
        if not self.main:
            return
        self.outputs_begin()
        try:
            atomic_save({**state, "epoch": epoch, "step": step, "settings": self.config,
                         "run_id": self.run_id}, self.folder.ckpt)
        except UserError as e:  # a full disk: the last checkpoint is still whole
            raise self.failed(e) from None
        self.saved_at = (epoch, step)

    def failed(self, error):
        """A write that failed, said with what is kept and what to do."""
        return UserError(f"{error}; {self.kept()}: free some space, then resume with --resume")

    def kept(self):
        """Which checkpoint a failed run leaves behind, in words."""
        if self.saved_at is None:
            return "no checkpoint had been written yet"
        epoch, step = self.saved_at
        where = f"after epoch {epoch}" if not step else f"epoch {epoch + 1}, step {step}"
        return f"the last good checkpoint ({where}) is kept at {self.folder.ckpt}"

    def write(self, **record):
        if self.log is not None:
            self.log.write(**record)

    def pictures(self, pictures, epoch):
        """The epoch's pictures ({tag: (images, nrow)}) into TensorBoard, when it is on."""
        if self.tensorboard is not None:
            for tag, (images, nrow) in pictures.items():
                self.tensorboard.image(tag, images, epoch, nrow=nrow)

    def plot(self, trainer, history, now=False):
        """Redraw the curves when they lack epochs and, unless `now`, were last drawn
        PLOT_SECONDS ago; a failure is a warning (they are redrawn next time)."""
        done, when = self.plotted
        if (self.main and len(history) > done
                and (now or time.monotonic() - when >= PLOT_SECONDS)):
            try:
                trainer.plot(history)
            except UserError as e:
                info(f"warning: the curves were not drawn ({e})")
            self.plotted = (len(history), time.monotonic())

    def settings_line(self, runtime):
        info("settings: " + json.dumps(self.config))
        info("runtime: " + json.dumps(runtime))

    def close(self):
        if self.tensorboard is not None:
            self.tensorboard.close()
