"""Several processes (torchrun) and stopping cleanly: which rank this is, collectives over
the ranks, and the stop signal (SIGTERM/SIGUSR1, a stop file, a time limit)."""
import os
import signal
import time
from dataclasses import dataclass

import torch

from cli import UserError, info


@dataclass
class Dist:
    """Where this process stands among those torchrun started (one process: rank 0 of 1)."""
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self):
        return self.world_size > 1

    @property
    def is_main(self):
        return self.rank == 0

    def all_max(self, tensor):
        """The largest value over every process (in place); a no-op for one process."""
        if self.enabled:
            torch.distributed.all_reduce(tensor, op=torch.distributed.ReduceOp.MAX)
        return tensor

    def all_sum(self, tensor):
        if self.enabled:
            torch.distributed.all_reduce(tensor)
        return tensor

    def wrap(self, module, device):
        """DistributedDataParallel around a module when there are several processes."""
        if not self.enabled:
            return module
        from torch.nn.parallel import DistributedDataParallel as DDP

        ids = [device.index] if device.type == "cuda" else None
        return DDP(module, device_ids=ids)

    def per_rank_batch(self, batch_size):
        if batch_size % self.world_size:
            raise UserError(f"--batch_size {batch_size} is the global batch and must divide "
                            f"among the {self.world_size} processes")
        return batch_size // self.world_size


def init_distributed(device_arg):
    """Join the process group torchrun set up (its RANK/WORLD_SIZE/LOCAL_RANK variables):
    NCCL on GPUs, gloo on the CPU. Without torchrun: a single process."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Dist()
    rank, local = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    use_cuda = device_arg != "cpu" and torch.cuda.is_available()
    if use_cuda:
        torch.cuda.set_device(local)
    if not torch.distributed.is_initialized():
        torch.distributed.init_process_group("nccl" if use_cuda else "gloo")
    return Dist(rank, world, local)


class StopSignal:
    """Asks a trainer to stop cleanly: SIGTERM or SIGUSR1 (what SLURM sends before the
    walltime with --signal), a stop file appearing (what the job scripts create when the
    scheduler warns them; it reaches every node of a multi-node job), or a time limit.

    The trainers ask after every step. Signals are answered at once; the file and the clock
    are looked at every `every` steps, and with several processes the ranks agree then (one
    all-reduce), so all of them stop after the same step.
    """

    SIGNALS = ("SIGTERM", "SIGUSR1")

    def __init__(self, dist=None, stop_file=None, time_limit=None, every=10):
        self.dist, self.every, self.received = dist or Dist(), every, None
        self.stop_file, self.deadline = stop_file, None
        if time_limit:
            self.deadline = time.time() + time_limit
        self._previous = {}
        for name in self.SIGNALS:
            if hasattr(signal, name):
                sig = getattr(signal, name)
                self._previous[sig] = signal.signal(sig, self._handle)

    def _handle(self, signum, frame):
        if self.received is None:
            info(f"received {signal.Signals(signum).name}: stopping after this step")
        self.received = signum

    def _asked(self):
        if self.received is not None:
            return True
        if self.stop_file and os.path.exists(self.stop_file):
            info(f"found {self.stop_file}: stopping after this step")
            return True
        if self.deadline and time.time() > self.deadline:
            info("--time_limit reached: stopping after this step")
            return True
        return False

    def __call__(self, step, device=None):
        if not self.dist.enabled and self.received is not None:
            return True
        if (step + 1) % self.every:
            return False
        asked = self._asked()
        if not self.dist.enabled:
            return asked
        flag = torch.tensor(float(asked), device=device)
        return bool(self.dist.all_max(flag).item())

    def restore(self):
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)

