"""What a trainer is to the epoch loop (utils/training.py): the Trainer protocol, checked when
a run opens, what it reports after an epoch, and the check its networks make of the batch."""
from typing import ClassVar, NamedTuple, Protocol, runtime_checkable

import torch

from utils.errors import UserError

class EpochEnd(NamedTuple):
    """What a trainer reports after an epoch: its record (to the history and the log), a line
    of text (to stderr) and pictures {tag: (images (N, C, S, S) in [-1, 1], columns)} (to
    TensorBoard, with --tensorboard)."""
    record: dict
    text: str
    pictures: dict = {}


@runtime_checkable
class Trainer(Protocol):
    """What the epoch loop needs of a trainer."""
    kind: ClassVar[str]  # its files: KIND.ckpt, KIND_log.jsonl, KIND_config.json
    fields: ClassVar[dict]  # its checkpoint's entries (checkpoints.Field) beyond progress
    products: ClassVar[tuple]  # the files a finished run leaves (its model files)
    patterns: ClassVar[tuple]  # regular expressions of more of its files (a GAN's grids)
    sums_width: ClassVar[int]  # how many running sums a step adds to

    def state(self) -> dict:
        """Its networks' and optimizers' state dicts."""

    def load(self, ckpt, path):
        """Back from a checkpoint's state dicts."""

    def begin_epoch(self, epoch):
        """Anything set per epoch (a learning rate, training mode)."""

    def step(self, i, x, y, sums):
        """One training step on batch i: adds to sums in place, returns the loss to watch for
        NaN (a tensor, never read back here)."""

    def means(self, sums) -> dict:
        """The running sums as named figures."""

    def end_epoch(self, epoch, means, seconds, history) -> EpochEnd:
        """On rank 0 after an epoch: evaluates and draws; history holds the run's records of
        the epochs before (resumptions included)."""

    def plot(self, history):
        """On rank 0: the curves, redrawn at most every utils.recorder.PLOT_SECONDS (drawing
        them costs more than a small epoch), after the last epoch and before a stop."""


CLASS_MEMBERS = ("kind", "fields", "products", "patterns", "sums_width")


def check_trainer(trainer):
    """A trainer class lacking what the loop needs is a programming error, found at once."""
    missing = [m for m in CLASS_MEMBERS + tuple(
        n for n in vars(Trainer) if not n.startswith("_") and callable(getattr(Trainer, n)))
               if not hasattr(trainer, m)]
    if missing:
        raise TypeError(f"{getattr(trainer, '__name__', trainer)} is not a Trainer: it lacks "
                        f"{', '.join(missing)}")


def check_batch_statistics(batches, *modules):
    """BatchNorm in training mode needs two images a batch: a batch of one (a --batch_size of
    1, or of fewer than two images per process under torchrun) is refused in one line before
    any training, not found by BatchNorm in its first step."""
    norms = (torch.nn.modules.batchnorm._BatchNorm,)
    if batches.batch_size < 2 and any(isinstance(m, norms) for net in modules
                                      for m in net.modules()):
        raise UserError(f"batches of {batches.batch_size} image per process: BatchNorm in these "
                        "networks needs at least 2; pass a --batch_size of at least 2 per "
                        "process")
