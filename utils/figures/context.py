"""What every figure of visualize.py shares: the run's model files, the device, the test batch,
file names that carry the settings, summary.json (the figures' numbers), the plots' look."""
import os
import time

import torch

from utils import runfiles
from utils.checkpoints import load_model
from utils.console import info, tidy
from utils.errors import UserError
from utils.data import load_dataset, make_generator, to_float
from utils.files import update_json
from utils.figures.options import FigureOptions
from utils.runtime import Runtime
from utils.settings import RuntimeSettings

MODELS = {"baseline": (runfiles.BASELINE_MODEL, "train_baseline.py"),
          "gan": (runfiles.DISCRIMINATOR_MODEL, "train_gan.py")}


def style_axes(ax, title, xlabel, ylabel=None, legend=8, percent=False, title_size=9):
    """The plots' common look: labels, a faint grid, a legend; percent: y from 0 to 100."""
    ax.set_title(title, fontsize=title_size)
    ax.set_xlabel(xlabel)
    if ylabel:
        ax.set_ylabel(ylabel)
    if percent:
        ax.set_ylim(0, 100)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=legend)


def pick_test_batch(data, n, seed):
    """n test images chosen by the seed (the folder copy of CIFAR-10 is sorted by class)."""
    n = min(n, len(data.test_y))
    idx = torch.randperm(len(data.test_y), generator=make_generator("cpu", seed, "vis_batch"))[:n]
    return to_float(data.test_x[idx]), data.test_y[idx]


class Context:
    """What the figures share: the FigureOptions, paths, device, loaded models, the test batch."""

    def __init__(self, options):
        self.options = opts = options
        self.runtime = Runtime.from_settings(RuntimeSettings(
            device=opts.device, amp=opts.amp, channels_last=opts.channels_last, compile="off",
            fused_adam="off", data_on_device="off"))
        self.device = self.runtime.device
        self.run_dir = opts.run_dir
        self.out_dir = opts.out_dir or os.path.join(opts.run_dir, runfiles.VISUALIZATION)
        in_run = lambda name: os.path.join(opts.run_dir, name)  # noqa: E731
        self.paths = {"baseline": opts.baseline_model or in_run(MODELS["baseline"][0]),
                      "gan": opts.gan_model or in_run(MODELS["gan"][0]),
                      "generator": opts.generator_model or runfiles.sampler(opts.run_dir)}
        # transfer's --judges: more classifiers, named judge1, judge2 ... as models here
        self.judges = [f"judge{i}" for i in range(1, len(opts.judges or ()) + 1)]
        self.paths.update(zip(self.judges, opts.judges or ()))
        # --model both: the discriminators whose files exist (a GAN-only run has no baseline)
        self.names = ([n for n in ("baseline", "gan") if os.path.isfile(self.paths[n])]
                      if opts.model == "both" else [opts.model])
        self._models, self._batch, self._digests = {}, None, {}

    def require_models(self):
        """Some model to show: a run folder without any is one line (nothing is made)."""
        if not os.path.isdir(self.run_dir):
            raise UserError(f"--run_dir {self.run_dir} does not exist: point it at the --out_dir "
                            "of train_baseline.py or train_gan.py")
        if not self.names and not os.path.isfile(self.paths["generator"]):
            simclr = os.path.isfile(os.path.join(self.run_dir, runfiles.SIMCLR_MODEL))
            then = (": its simclr.model is shown by visualize.py neighbours" if simclr
                    else ": nothing to show")
            raise UserError(f"{self.run_dir} holds no model file of these figures (cifar10.model "
                            "from train_baseline.py, discriminator.model and generator.model "
                            f"from train_gan.py){then}")

    def digest(self, name):
        """The content hash of the model file's bytes as loaded (a model replaced while a figure
        was being made does not pass for its model)."""
        self.model(name)
        return self._digests[name]

    def layers(self, name):
        """--layers, or the assignment's 2 3 4 6 8 for its network, every block for the others."""
        model, _ = self.model(name)
        if self.options.layers:
            return list(self.options.layers)
        if model.family == "ie534":
            return [k for k in (2, 3, 4, 6, 8) if k <= model.depth]
        return list(range(1, model.depth + 1))

    def model(self, name):
        if name not in self._models:
            role, made_by = (("generator", "train_gan.py") if name == "generator"
                             else ("discriminator", MODELS.get(name, ("", "train_baseline.py "
                                                                      "or train_gan.py"))[1]))
            # the identity of the bytes loaded: what the figures made from it record
            model, ckpt, self._digests[name] = load_model(self.paths[name], role, made_by,
                                                          identity=True)
            model.requires_grad_(False)  # only the input is optimised here
            self._models[name] = (self.runtime.module(model), ckpt)
        return self._models[name]

    def classes(self, name):
        ckpt = self.model(name)[1]
        n = ckpt["build_args"].get("num_classes", 10)
        return list(ckpt.get("classes") or [str(i) for i in range(n)])

    def with_class_head(self, figure):
        """The chosen discriminators that have a class head; one without is an error when the
        figure was asked for alone, and is skipped with a line under 'all'."""
        for name in self.names:
            if self.model(name)[0].num_classes:
                continue
            why = (f"{figure} needs a class head, and the {name} discriminator "
                   f"({self.paths[name]}) has none ({self.headless(name)})")
            if self.options.figure != "all":
                raise UserError(why + ": try max-features or samples")
            info(f"{figure}: skipped: {why}")
        return [name for name in self.names if self.model(name)[0].num_classes]

    def batch(self):
        """The test batch (x in [-1, 1], labels) from the dataset the first model was trained on."""
        if self._batch is None:
            trained = self.model(self.names[0])[1]["settings"]
            dataset = self.options.dataset or trained.get("dataset", "cifar10")
            data_dir = self.options.data_dir or trained.get("data_dir", "./data")
            data = load_dataset(dataset, data_dir, self.options.cache_dir)
            for name in self.names:
                self.check_fits(name, data)
            self.data = data
            x, y = pick_test_batch(data, self.options.batch_size, self.options.seed)
            self._batch = (x.to(self.device, memory_format=self.runtime.memory_format),
                           y.to(self.device))
        return self._batch

    def headless(self, name):
        """Why a model file has no class head, in the words of the command that wrote it."""
        if self.model(name)[1].get("made_by") == "train_simclr.py":
            return "a SimCLR encoder from train_simclr.py"
        return "a GAN critic trained with --acgan off"

    def check_judges(self):
        """transfer's --judges: each has a class head and reads the images shown."""
        self.batch()
        for name in self.judges:
            if not self.model(name)[0].num_classes:
                raise UserError(f"--judges {self.paths[name]}: it has no class head "
                                f"({self.headless(name)}), so it cannot judge a class; judge "
                                "with a classifier from train_baseline.py")
            self.check_fits(name, self.data)

    def colour(self):
        """The training pixels' colour matrix (lucid's decorrelation), for --param fft."""
        from utils.figures.lucid import colour_matrix

        self.batch()
        return colour_matrix(self.data.train_x, seed=self.options.seed)

    def check_fits(self, name, data):
        """Refuse data of another image shape, or other classes, than the discriminator's."""
        model, ckpt = self.model(name)
        want = (model.build_args.get("in_channels"), model.build_args.get("image_size"))
        have = (data.channels, data.image_size)
        fix = "pass the --dataset (and --data_dir) it was trained on"
        if want != have:
            raise UserError(f"the {name} discriminator ({self.paths[name]}) reads "
                            f"{want[0]}-channel {want[1]}x{want[1]} images, and {data.name}'s "
                            f"are {have[0]}-channel {have[1]}x{have[1]}: {fix}")
        classes = list(ckpt.get("classes") or [])
        if model.num_classes and classes and classes != list(data.classes):
            raise UserError(f"the {name} discriminator ({self.paths[name]}) names the classes "
                            f"{', '.join(classes[:4])}..., and {data.name}'s are "
                            f"{', '.join(list(data.classes)[:4])}...: {fix}")

    def suffix(self, *names):
        """Settings that differ from the defaults, for file names: '_gain4_jitter2'."""
        parts, defaults = [], FigureOptions()
        for name in names:
            value = getattr(self.options, name)
            if value != getattr(defaults, name):
                v = "-".join(map(str, value)) if isinstance(value, tuple) else f"{value:g}" \
                    if isinstance(value, float) else str(value)
                parts.append("_" + name.replace("_", "") + v)
        return "".join(parts)

    def out(self, name):
        os.makedirs(self.out_dir, exist_ok=True)
        return os.path.join(self.out_dir, name)

    def record(self, key, value, files=(), uses=()):
        """Put one figure's numbers into summary.json (atomically, keeping the rest), with the
        files it drew and the content hash of each model file it was made from (uses: names
        of models), so that the report can tell a figure of an earlier model."""
        value = dict(tidy(value), files=list(files), time=round(time.time(), 3),
                     made_from={n: runfiles.made_from(self.paths[n], self.run_dir, self.digest(n))
                                for n in uses})
        update_json(self.out(runfiles.SUMMARY), key, value)
