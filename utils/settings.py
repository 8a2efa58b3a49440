"""A run's settings, resolved once by the command that starts it (its flags over its recipe's
defaults over the parser's, then what follows from them: the family's width, the loss
family's penalty or clipping) into typed, frozen objects by concern, and passed down. Library
code reads these, never the command line.

The flat dict of every setting (Settings.flat) is what a run prints, saves as KIND_config.json
and stores in its checkpoint and model files: the same keys as the flags.
"""
from dataclasses import dataclass, field, fields
from types import MappingProxyType


@dataclass(frozen=True)
class DataSettings:
    """Which images, how many and how they reach a step."""
    dataset: str = "cifar10"
    data_dir: str = "./data"
    cache_dir: str = None  # decoded image folders, the digits (default ~/.cache/cnn_gan)
    download_only: bool = False  # fetch the data, train nothing (a login node)
    subset: int = None  # N training images, a seeded choice
    labels_per_class: int = None  # N labelled training images of each class
    batch_size: int = 128  # the global batch, split among processes
    augment: str = "assignment"  # assignment | flip | none
    color_jitter: str = "assignment"  # assignment | off | B,C,S,H
    shuffle: str = "on"
    drop_last: str = "on"


@dataclass(frozen=True)
class RuntimeSettings:
    """Device, precision, compilation: 'auto', 'on' or 'off' each (utils/runtime.py)."""
    device: str = "auto"
    amp: str = "auto"
    compile: str = "auto"
    channels_last: str = "auto"
    fused_adam: str = "auto"
    data_on_device: str = "auto"
    sync_bn: str = "off"
    deterministic: bool = False


@dataclass(frozen=True)
class LoopSettings:
    """The epoch loop: how long, where to, when to stop, what to log."""
    out_dir: str = "."
    epochs: int = 1
    resume: str = "no"  # no | yes | auto | a checkpoint's path
    overwrite: bool = False
    log_every: int = 50
    tensorboard: bool = False
    stop_file: str = None
    time_limit: float = None


@dataclass(frozen=True)
class ModelSettings:
    arch: str = "ie534"  # the family of networks (models.ARCHITECTURES)
    width: int = None  # resolved to the family's when not given


@dataclass(frozen=True)
class OptimSettings:
    optimizer: str = "adam"  # adam | rmsprop | sgd
    lr: float = 1e-4
    beta1: float = 0.9
    beta2: float = 0.999
    adam_step_cap: int = 1024  # IE 534's Adam step guard; 0: plain Adam
    weight_decay: float = 0.0


@dataclass(frozen=True)
class GanSettings:
    """What a GAN's steps do beyond the networks (utils.gan.GanSpec is the steps' view)."""
    loss: str = "wgan-gp"
    acgan: str = "on"
    gen_train: int = 1
    d_first: str = "off"
    gp_weight: float = None  # resolved to the loss family's
    clip: float = None  # resolved to the loss family's
    latent_dim: int = 100
    noise: str = "normal"
    real_label: float = 1.0
    ema: float = 0.0
    diffaugment: str = "off"
    spectral_norm: str = "off"


GROUPS = (("data", DataSettings), ("runtime", RuntimeSettings), ("loop", LoopSettings),
          ("model", ModelSettings), ("optim", OptimSettings), ("gan", GanSettings))


@dataclass(frozen=True)
class Settings:
    """Every setting of one command, by concern; `options` holds the command's own (a frozen
    dataclass it declares), `values` the flat dict they were made from."""
    seed: int = 0
    recipe: str = None
    data: DataSettings = DataSettings()
    runtime: RuntimeSettings = RuntimeSettings()
    loop: LoopSettings = LoopSettings()
    model: ModelSettings = ModelSettings()
    optim: OptimSettings = OptimSettings()
    gan: GanSettings = GanSettings()
    options: object = None
    values: MappingProxyType = field(default_factory=lambda: MappingProxyType({}))

    @classmethod
    def resolve(cls, values, options=None):
        """Settings from a flat dict of resolved values (a command's flags). Each value goes to
        the one group with a field of its name, the rest to `options` (a dataclass type): a
        value with no home is a programming error, not silently dropped."""
        values = {k: v for k, v in sorted(dict(values).items()) if not callable(v)}
        left = dict(values)
        parts = {k: left.pop(k) for k in ("seed", "recipe") if k in left}
        for name, kind in GROUPS:
            parts[name] = kind(**{f.name: left.pop(f.name) for f in fields(kind)
                                  if f.name in left})
        if options is not None:
            known = {f.name for f in fields(options)}
            parts["options"] = options(**{k: left.pop(k) for k in list(left) if k in known})
        if left:
            raise TypeError(f"settings with no home: {', '.join(sorted(left))}")
        return cls(**parts, values=MappingProxyType(values))

    def flat(self):
        """Every setting by its flag's name: what is printed, saved and checked on resume."""
        return dict(self.values)
