"""Device, precision, memory format, compilation and reproducibility, decided in one place
for every script."""
import contextlib
import os
import re
from dataclasses import dataclass

import numpy as np
import torch

from utils.errors import UserError


def resolve_device(name):
    """'auto' -> cuda when available, else cpu; a CUDA device that is not there is an error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise UserError(f"--device {name} is not a device; use auto, cpu, cuda or cuda:N") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UserError(f"--device {name}: CUDA is not available on this machine; use --device cpu")
    if device.type == "cuda" and (device.index or 0) >= torch.cuda.device_count():
        raise UserError(f"--device {name}: this machine has {torch.cuda.device_count()} GPU(s)")
    return device


SPEED_FLAGS = {
    "amp": "bf16 autocast of the networks (losses and LayerNorm stay fp32)",
    "compile": "torch.compile the networks' forward and backward passes (the gradient "
               "penalty's double backward runs eagerly)",
    "channels_last": "channels_last memory format for the networks and their inputs",
    "fused_adam": "fused Adam kernels (the step-overflow guard still applies)",
    "data_on_device": "hold the whole dataset on the GPU as uint8 and augment it there",
}


def cpu_has_bf16_units(cpuinfo="/proc/cpuinfo"):
    """Whether this CPU computes bf16 in hardware (AVX512-BF16 or AMX-BF16, read from Linux's
    cpuinfo; False where that is not there to read)."""
    with contextlib.suppress(OSError), open(cpuinfo) as f:
        return re.search(r"\b(avx512_bf16|amx_bf16)\b", f.read()) is not None
    return False


def speedups(choices, on_gpu, bf16_units=None):
    """Which speed-ups the settings (a RuntimeSettings) turn on: 'on' and 'off' as said. 'auto'
    on CUDA: every speed-up; on the CPU, bf16 autocast alone and only where the CPU has bf16
    units (elsewhere it is emulated and many times slower): the others lose time there or gain
    little (docs/speed.md)."""
    bf16 = on_gpu or (cpu_has_bf16_units() if bf16_units is None else bf16_units)
    return {k: (on_gpu or (k == "amp" and bf16)) if getattr(choices, k) == "auto"
            else getattr(choices, k) == "on" for k in SPEED_FLAGS}


@dataclass
class Runtime:
    """Device, precision, memory format and compilation: decided here, once, for every script
    (what 'auto' picks: speedups)."""
    device: torch.device
    amp: bool = False
    compile: bool = False
    channels_last: bool = False
    fused_adam: bool = False
    data_on_device: bool = False
    deterministic: bool = False
    sync_bn: bool = False
    compile_backend: str = "inductor"

    @classmethod
    def from_settings(cls, choices, dist=None):
        """The runtime a RuntimeSettings asks for, on this machine and process."""
        device = resolve_device(choices.device)
        several = dist is not None and dist.enabled
        if several and device.type == "cuda":
            device = torch.device("cuda", dist.local_rank)  # one GPU per process
        on_gpu = device.type == "cuda"
        pick = speedups(choices, on_gpu)
        sync = choices.sync_bn
        pick["sync_bn"] = sync == "on" or (sync == "auto" and several and on_gpu)
        if pick["sync_bn"] and not on_gpu:
            raise UserError("--sync_bn on needs CUDA (SyncBatchNorm has no CPU kernels); use "
                            "--sync_bn off")
        pick["deterministic"] = bool(choices.deterministic)
        if pick["deterministic"]:
            make_deterministic()
        elif on_gpu:
            torch.backends.cudnn.benchmark = True  # fixed shapes: let cuDNN pick its kernels
        return cls(device, **pick)

    @property
    def memory_format(self):
        return torch.channels_last if self.channels_last else torch.contiguous_format

    def autocast(self):
        if not self.amp:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=torch.bfloat16)

    def module(self, model):
        """The model on the device in the chosen memory format (parameters stay fp32)."""
        return model.to(self.device, memory_format=self.memory_format)

    def compiled(self, model):
        """A compiled wrapper sharing the model's parameters (save the model, not this)."""
        return torch.compile(model, backend=self.compile_backend) if self.compile else model

    def adam(self, params, lr, betas=(0.9, 0.999), weight_decay=0.0):
        kind = dict(fused=True) if self.fused_adam else {}
        return torch.optim.Adam(params, lr=lr, betas=tuple(float(b) for b in betas),
                                weight_decay=weight_decay, **kind)

    def optimizer(self, name, params, lr, betas=(0.9, 0.999)):
        """'adam' (fused on the fast path), 'rmsprop' (WGAN's) or 'sgd' (plain, no momentum:
        the batch-normalization lesson's); betas are Adam's alone."""
        if name == "rmsprop":
            return torch.optim.RMSprop(params, lr=lr)
        if name == "sgd":
            return torch.optim.SGD(params, lr=lr)
        return self.adam(params, lr, betas)

    def describe(self):
        return dict(device=str(self.device), **{k: getattr(self, k) for k in SPEED_FLAGS},
                    deterministic=self.deterministic, sync_bn=self.sync_bn)


def make_deterministic():
    """Deterministic kernels everywhere (an operation that has none warns, naming itself),
    no cuDNN autotuning (it may pick other kernels after a restart), and the cuBLAS workspace
    setting that deterministic matrix products need (read before CUDA starts)."""
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(True, warn_only=True)
    torch.backends.cudnn.benchmark = False
    torch.backends.cudnn.deterministic = True


def seed_everything(seed):
    """Seed the global generators (model initialisation); the data has generators of its own."""
    torch.manual_seed(seed)
    np.random.seed(seed % 2**32)


def reset_peak_memory(device):
    """Start a new peak-memory window: the GPU allocator's on CUDA, the process's resident
    high-water mark on Linux CPUs (elsewhere the CPU figure is the peak since start)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        return
    with contextlib.suppress(OSError), open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # Linux: resets this process's VmHWM


def peak_memory_mib(device):
    """The peak since reset_peak_memory, in MiB: GPU memory the allocator handed out on
    CUDA, resident memory on the CPU (NaN where the system does not say)."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    with contextlib.suppress(OSError), open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return float("nan")
