"""Several processes (torchrun) and stopping cleanly: which rank this is, collectives over
the ranks, and the stop signal (SIGTERM/SIGUSR1, a stop file, a time limit)."""
import os
import signal
import threading
import time
from dataclasses import dataclass

import torch

from utils.console import info
from utils.errors import UserError


@dataclass
class Dist:
    """Where this process stands among those torchrun started (one process: rank 0 of 1).
    cpu_group: a gloo group for small flags on the CPU (the stop request), so that agreeing on
    them never waits for a GPU; None when the default group is gloo already."""
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    cpu_group: object = None

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

        return DDP(module, device_ids=[device.index] if device.type == "cuda" else None)

    def per_rank_batch(self, batch_size):
        if batch_size % self.world_size:
            raise UserError(f"--batch_size {batch_size} is the global batch and must divide "
                            f"among the {self.world_size} processes")
        return batch_size // self.world_size


def torchrun_env(environ=None):
    """(rank, world size, local rank) from torchrun's variables, each checked before anything
    starts (torch would fail later with a traceback): a bad one is one line that names it.
    Without torchrun (no WORLD_SIZE, or 1): (0, 1, 0)."""
    env = os.environ if environ is None else environ
    fix = "launch with torchrun, which sets them all, or unset them for a single process"

    def whole(name, low, high=None, default=None):
        text = env.get(name)
        if text is None:
            if default is None:
                raise UserError(f"{name} is not set, though WORLD_SIZE is {env['WORLD_SIZE']}: "
                                + fix)
            return default
        try:
            value = int(text.strip())
        except ValueError:
            raise UserError(f"{name}={text!r} is not a whole number: {fix}") from None
        if value < low or (high is not None and value > high):
            span = f"{low} to {high}" if high is not None else f"{low} or more"
            raise UserError(f"{name}={value} is out of range ({span}): {fix}")
        return value

    world = whole("WORLD_SIZE", 1, default=1)
    rank = whole("RANK", 0, world - 1, default=None if world > 1 else 0)
    if world == 1:
        return rank, 1, 0
    local = whole("LOCAL_RANK", 0, world - 1, default=None)
    if not env.get("MASTER_ADDR", "").strip():
        raise UserError(f"MASTER_ADDR is not set, though WORLD_SIZE is {world}: {fix}")
    whole("MASTER_PORT", 1, 65535, default=None)
    return rank, world, local


def init_distributed(device_arg):
    """Join the process group torchrun set up (its RANK/WORLD_SIZE/LOCAL_RANK variables):
    NCCL on GPUs, gloo on the CPU. Without torchrun: a single process."""
    rank, world, local = torchrun_env()
    if world <= 1:
        return Dist()
    use_cuda = device_arg != "cpu" and torch.cuda.is_available()
    if use_cuda:
        torch.cuda.set_device(local)
    if not torch.distributed.is_initialized():
        join_group("nccl" if use_cuda else "gloo", world)
    gloo = torch.distributed.get_backend() == "gloo"
    return Dist(rank, world, local, None if gloo else torch.distributed.new_group(backend="gloo"))


WAIT_NOTE_S = 15  # a rendezvous slower than this is said: the others may never come


def join_group(backend, world):
    """init_process_group, which blocks in C++ until every process has come: Python's signal
    handlers cannot run there, so the stop signals keep their default (ending the process;
    nothing is written before this) until it returns; a line if the wait is long."""
    signals = [getattr(signal, n) for n in StopSignal.SIGNALS if hasattr(signal, n)
               and threading.current_thread() is threading.main_thread()]
    previous = {sig: signal.signal(sig, signal.SIG_DFL) for sig in signals}
    where = f"{os.environ.get('MASTER_ADDR', '?')}:{os.environ.get('MASTER_PORT', '?')}"
    note = threading.Timer(WAIT_NOTE_S, info, [
        f"waiting for the {world} processes of this torchrun job at {where} (are they all "
        "started? Ctrl-C or SIGTERM ends the wait)"])
    note.daemon = True
    note.start()
    try:
        torch.distributed.init_process_group(backend)
    finally:
        note.cancel()
        for sig, handler in previous.items():
            signal.signal(sig, handler)


class StopSignal:
    """Asks a trainer to stop cleanly: SIGTERM or SIGUSR1 (what SLURM sends before the
    walltime with --signal), a stop file appearing (what the job scripts create; it reaches
    every node of a multi-node job), or a time limit.

    Asked after every step, it must cost next to nothing: the file is looked for at most every
    poll_seconds (a stat on a shared file system is not free). The ranks must stop after the
    same step: each step starts an asynchronous all-reduce of this rank's answer over a CPU
    (gloo) group and reads the one started a step earlier, so all stop together one step after
    any was asked, never waiting on the network or the GPU. settle() agrees synchronously."""

    SIGNALS = ("SIGTERM", "SIGUSR1", "SIGINT")

    def __init__(self, dist=None, stop_file=None, time_limit=None, poll_seconds=1.0,
                 started=None):
        if stop_file and os.path.isdir(stop_file):
            raise UserError(f"--stop_file {stop_file} is a folder: name a file (the job scripts "
                            "create it when the scheduler warns of the walltime)")
        self.dist, self.stop_file, self.poll_seconds = dist or Dist(), stop_file, poll_seconds
        self.received = self.reason = None
        # a stop file left by an earlier stop stops this run after its first step: said once
        self.preexisting = bool(stop_file) and os.path.exists(stop_file)
        started = time.monotonic() if started is None else started
        self.deadline = started + time_limit if time_limit else None
        self._next_poll = 0.0  # the first call looks for the file at once
        self._pending = None  # (work, flag) of the all-reduce started after the last step
        self._previous = {sig: signal.signal(sig, self._handle) for sig in
                          [getattr(signal, n) for n in self.SIGNALS if hasattr(signal, n)]}

    def attach(self, dist):
        """The process group, once joined (signals are caught from the start, before it)."""
        self.dist = dist
        return self

    def _handle(self, signum, frame):
        self.received = signum
        if signum == signal.SIGINT:  # the first Ctrl-C stops as SIGTERM does; a second one
            signal.signal(signal.SIGINT, signal.default_int_handler)  # ends at once
            if self.dist.is_main:
                info("Ctrl-C: stopping after this step with a checkpoint (Ctrl-C again to quit "
                     "at once)")

    @property
    def interrupted(self):
        """Whether the stop was asked with Ctrl-C (exit 130 rather than 75)."""
        return self.received == signal.SIGINT

    def received_name(self):
        return signal.Signals(self.received).name

    def announce(self):
        """Once training is about to start: say that a stop file was there already."""
        if self.preexisting and self.reason is None:
            self.reason = f"found {self.stop_file}"
            if self.dist.is_main:
                info(f"found {self.stop_file} before training started (left by an earlier "
                     "stop?): this run stops after its first step with a checkpoint; delete "
                     "it to train on")

    def asked(self):
        """Whether this process has been asked to stop (remembered once true)."""
        if self.reason is None:
            now = time.monotonic()
            if self.received is not None:
                self.reason = f"received {self.received_name()}"
            elif self.deadline is not None and now >= self.deadline:
                self.reason = "--time_limit reached"
            elif self.stop_file and now >= self._next_poll:
                self._next_poll = now + self.poll_seconds
                if os.path.exists(self.stop_file):
                    self.reason = f"found {self.stop_file}"
            if self.reason is not None and self.dist.is_main:
                info(f"{self.reason}: stopping after this step")
        return self.reason is not None

    def _agreed(self):
        """Stopping because a process was asked: when it was another one, look for the stop
        file at once (it is shared), so that rank 0 says why."""
        if self.reason is None:
            self._next_poll = 0.0
            if not self.asked():
                self.reason = "another process was asked to stop"
                if self.dist.is_main:
                    info(f"{self.reason}: stopping after this step")
        return True

    def _collect(self):
        """The agreement started a step earlier (False when none is under way)."""
        if self._pending is None:
            return False
        work, flag = self._pending
        self._pending = None
        work.wait()
        return flag.item() > 0

    def _reduce(self, asked, async_op):
        flag = torch.tensor([float(asked)])  # on the CPU: no GPU synchronisation
        work = torch.distributed.all_reduce(flag, op=torch.distributed.ReduceOp.MAX,
                                            group=self.dist.cpu_group, async_op=async_op)
        return work, flag

    def __call__(self):
        """After a step: True when every process is to stop now."""
        asked = self.asked()
        if not self.dist.enabled:
            return asked
        if self._collect():
            return self._agreed()
        self._pending = self._reduce(asked, async_op=True)
        return False

    def settle(self):
        """At an epoch's end: whether to stop, agreed by every process before returning."""
        asked = self.asked()
        if not self.dist.enabled:
            return asked
        earlier = self._collect()
        _, flag = self._reduce(asked, async_op=False)
        return (earlier or flag.item() > 0) and self._agreed()

    def finish(self):
        """Wait for the agreement still under way, if any (before leaving the group)."""
        self._collect()

    def restore(self):
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


def leave_group(dist, stop, together=True):
    """Leave the process group. When all ranks got here together, first finish the stop
    agreement still under way and wait for every rank: a rank that tears gloo down while
    another still talks to it (or whose TCP store has gone) aborts the process."""
    if together:
        stop.finish()
    stop.restore()
    if dist.enabled and torch.distributed.is_initialized():
        if together:
            torch.distributed.barrier(group=dist.cpu_group)
        torch.distributed.destroy_process_group()
