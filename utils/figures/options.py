"""Part 2's settings, resolved once by visualize.py into one frozen object that every figure
reads through its Context. The defaults are the assignment's and visualize.py's flags' (a test
holds them equal); file names carry the settings that differ from them (Context.suffix)."""
from dataclasses import dataclass, fields


@dataclass(frozen=True)
class FigureOptions:
    figure: str = "all"
    # the models and data every figure reads
    run_dir: str = "."
    out_dir: str = None  # default RUN_DIR/visualization (export: RUN_DIR/export)
    model: str = "both"  # both | baseline | gan
    baseline_model: str = None
    gan_model: str = None
    generator_model: str = None
    dataset: str = None  # default the model's
    data_dir: str = None  # default the model's
    cache_dir: str = None
    device: str = "auto"
    seed: int = 0
    batch_size: int = 100  # test images for perturb and the mean image
    amp: str = "off"  # Part 2's images are input gradients: fp32 unless asked
    channels_last: str = "auto"
    # perturb
    gain: float = 8.0
    max_gain: int = 16
    # max-class, max-features (and transfer's max-class images)
    steps: int = 200
    lr: float = 0.1
    weight_decay: float = 0.001
    jitter: int = 0
    blur_every: int = 0
    blur_sigma: float = 0.5
    param: str = "pixel"  # pixel | fft
    robust: str = "off"
    diversity: float = 0.0
    copies: int = 1
    fft_lr: float = 0.005
    layers: tuple = None
    n_features: int = 100
    # samples, export
    classes: tuple = ("all",)
    n_per_class: int = 10
    interp_steps: int = 10
    n: int = 50000
    # neighbours
    encoder: str = None
    n_queries: int = 8
    k: int = 8
    # beyond the assignment
    extras: bool = False
    n_images: int = 8
    ig_steps: int = 32
    ig_batch: int = 64
    gradcam_layer: int = None
    max_budget: int = 16
    attack_steps: int = 10
    judges: tuple = None
    # compare
    runs: tuple = None

    @classmethod
    def of(cls, values):
        """From a dict of flag values (those a subcommand has; the rest keep their defaults).
        Lists become tuples, so the object stays frozen all the way down."""
        known = {f.name for f in fields(cls)}
        unknown = set(values) - known
        if unknown:
            raise TypeError(f"figure settings with no home: {', '.join(sorted(unknown))}")
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in values.items()})
