"""Part 1, with the generator: ACGAN + WGAN-GP on CIFAR-10, and every other GAN of the
lessons through one training loop (--recipe, or --loss, --arch and --dataset).

    python train_gan.py                                 # width 196, 200 epochs (the assignment)
    python train_gan.py --width 128 --epochs 400        # the assignment's other option
    python train_gan.py --resume                        # continue an interrupted run
    python train_gan.py --recipe cs231n-dcgan --data_dir ../shared/data   # a lesson's GAN
    python train_gan.py --recipe wgan-clip --dataset mnist --data_dir ../shared/data
    python train_gan.py --dataset digits --width 32 --lr 1e-3 --batch_size 64 --epochs 20 \
        --out_dir runs/demo                             # a CPU demo in about three minutes

Each iteration is a critic step and, every --gen_train iterations, a generator step through
the frozen critic (generator first as IE 534; critic first with --d_first on, as the other
lessons). The losses are the loss family's (losses.py); --acgan on adds ACGAN's class term.

Writes to --out_dir: output/NNN.png (the same 100 noise vectors after every epoch; class c in
column c), gan.ckpt (--resume), generator.model and discriminator.model (for visualize.py),
gan_log.jsonl, gan_config.json and gan_curves.png; the last line on stdout is JSON.
"""
import os
import time
from dataclasses import dataclass

from flags import (COUNT, FRACTION, NONNEGATIVE, POSITIVE_INT, ArgumentParser, add_shared_flags,
                   add_speed_flags, download_only, number, resolve_settings, run_main, with_recipe)
from losses import LOSSES
from recipes import RECIPES, resolve_loss_defaults
from utils import runfiles
from utils.checkpoints import OPTIMIZER, WEIGHTS, load_state, save_model
from utils.console import info, print_result
from utils.errors import UserError
from utils.data import default_cache_dir, make_generator
from utils.diffaug import parse_policy
from utils.gan import CLASS_STATS, D_STATS, GanSpec, build_gan, gan_iteration, save_samples
from utils.pictures import CURVE_PANELS, gan_title, plot_curves
from utils.sampling import fixed_noise, sample_generator
from utils.trainer import EpochEnd, check_batch_statistics
from utils.training import evaluate, open_run


def build_parser():
    p = ArgumentParser(description=__doc__.split("\n\n")[0])
    option = "the assignment's two options: width 196 for 200 epochs, width 128 for 400"
    add_shared_flags(p, epochs=200, lr=1e-4, batch_size=128,
                     notes={"epochs": option, "width": option,
                            "adam_step_cap": "default: the recipe's (1024 for ie534, 0 for the "
                                             "others)"})
    add_speed_flags(p, training=True).add_argument(
        "--sync_bn", choices=("auto", "on", "off"), default="auto",
        help="BatchNorm over the global batch (SyncBatchNorm): auto is on for several CUDA "
             "processes, as the assignment normalises over all 128 images")
    g = p.add_argument_group("GAN")
    g.add_argument("--recipe", choices=tuple(RECIPES), default="ie534",
                   help="set every default to one lesson's GAN (recipes.py); flags still "
                        "override it: " + "; ".join(f"{k}: {r.lesson}" for k, r in
                                                     RECIPES.items()))
    g.add_argument("--loss", choices=tuple(LOSSES), default="wgan-gp",
                   help="the loss family (losses.py)")
    g.add_argument("--acgan", choices=("on", "off"), default="on",
                   help="ACGAN's class conditioning and auxiliary classifier; off trains an "
                        "unconditional generator")
    g.add_argument("--gen_train", type=POSITIVE_INT, default=1,
                   help="train the generator every N discriminator steps (WGAN's n_critic)")
    g.add_argument("--d_first", choices=("on", "off"), default="off",
                   help="which network steps first in an iteration: off, the generator (IE "
                        "534); on, the discriminator (CS231n, Udacity, WGAN's n_critic critic "
                        "steps before each generator step)")
    g.add_argument("--gp_weight", type=NONNEGATIVE, default=None,
                   help="gradient penalty lambda (default 10 for wgan-gp, else 0: off)")
    g.add_argument("--clip", type=NONNEGATIVE, default=None,
                   help="clip the critic's weights to [-c, c] after each step (default 0.01 "
                        "for wgan, else 0: off)")
    g.add_argument("--latent_dim", type=POSITIVE_INT, default=100,
                   help="noise values per image; with --acgan on the first num_classes are "
                        "the one-hot class")
    g.add_argument("--noise", choices=("normal", "uniform"), default="normal",
                   help="the noise's distribution: N(0, 1) or uniform in [-1, 1]")
    g.add_argument("--optimizer", choices=("adam", "rmsprop"), default="adam",
                   help="the optimizer of both networks")
    g.add_argument("--real_label", type=number(float, low=0, high=1, low_open=True), default=1.0,
                   help="the real images' target in the discriminator's loss; 0.9 is one-sided "
                        "label smoothing (Udacity's real_loss(smooth=True)); only for the "
                        "losses with labels (gan, gan-saturating, lsgan)")
    g.add_argument("--beta1", type=FRACTION, default=0.0, help="Adam beta1 of both networks")
    g.add_argument("--beta2", type=FRACTION, default=0.9, help="Adam beta2 of both networks")
    g = p.add_argument_group("beyond the lessons (off by default: every recipe stays its lesson)")
    g.add_argument("--ema", type=FRACTION, default=0.0,
                   help="keep an exponential moving average of the generator's weights with this "
                        "beta (e.g. 0.999), updated after every generator step and warmed up "
                        "(min(beta, (1 + t) / (10 + t)) at iteration t); grids, samples, "
                        "exports, metrics and visualize.py use it (generator_ema.model); 0: off")
    g.add_argument("--diffaugment", type=diffaugment_flag, default="off",
                   help="DiffAugment (Zhao et al. 2020): any of color,translation,cutout, "
                        "applied to every image the discriminator sees, real and fake; off")
    g.add_argument("--spectral_norm", choices=("on", "off"), default="off",
                   help="spectral normalisation of every convolution and linear layer of the "
                        "discriminator, any family (SNGAN)")
    g.add_argument("--keep_best", default=None,
                   help="with --eval_every: keep the generator (the EMA one when there is one) "
                        "of the best evaluation so far as generator_best.model, by this figure "
                        "(fid, kid, cfid: lower is better; is, cacc, cconf, precision, recall, "
                        "f_score: higher)")
    g = p.add_argument_group("sample quality during training (metrics.py)")
    g.add_argument("--eval_every", type=COUNT, default=0,
                   help="every N epochs (and after the last) measure the samples; 0: never")
    g.add_argument("--eval_metrics", default="fid,is",
                   help="comma-separated, from fid, is, kid (Inception, through torch-fidelity), "
                        "cfid and cacc (--eval_classifier)")
    g.add_argument("--eval_samples", type=POSITIVE_INT, default=5000,
                   help="samples per evaluation (FID on fewer than 50,000 reads higher)")
    g.add_argument("--eval_classifier", default=None,
                   help="a model file from train_baseline.py, for cfid and cacc (default "
                        "OUT_DIR/cifar10.model when it exists, as metrics.py)")
    g.add_argument("--inception_weights", default=None,
                   help="torch-fidelity's InceptionV3 weights file, for nodes without internet")
    return p


def diffaugment_flag(text):
    """--diffaugment: 'off' or any of color,translation,cutout (checked at parse time)."""
    import argparse

    try:
        policy = parse_policy(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None
    return ",".join(policy) or "off"


def parse_args(argv=None):
    """The flags, over the recipe's defaults, over the parser's."""
    return with_recipe(build_parser(), RECIPES, argv)


@dataclass(frozen=True)
class EvalOptions:
    """This command's own settings: sample quality during training (the GAN's are
    utils.settings.GanSettings)."""
    keep_best: str = None
    eval_every: int = 0
    eval_metrics: str = "fid,is"
    eval_samples: int = 5000
    eval_classifier: str = None
    inception_weights: str = None


def resolve(argv=None):
    """The command line resolved once into Settings: the defaults that hang on the loss
    family (the penalty for wgan-gp, clipping for wgan), the flags checked together, the
    evaluation's classifier found."""
    values = resolve_loss_defaults(vars(parse_args(argv)))
    if values["real_label"] != 1.0 and not LOSSES[values["loss"]].labelled:
        raise UserError(f"--real_label {values['real_label']}: the {values['loss']} loss has no "
                        "labels to smooth (its scores are not probabilities); use it with --loss "
                        "gan, gan-saturating or lsgan, or leave it at 1")
    if values["keep_best"] or values["eval_every"]:
        from utils.quality import check_counts, check_request, parse_metrics

        chosen = parse_metrics(values["eval_metrics"])
    if values["keep_best"]:
        need = BEST_KEYS.get(values["keep_best"])
        if need is None or not values["eval_every"] or not (
                need in chosen or (need == "prc" and "cprc" in chosen)):
            raise UserError(f"--keep_best {values['keep_best']}: it needs --eval_every and "
                            f"--eval_metrics that measure it (one of {', '.join(BEST_KEYS)})")
    if values["eval_every"]:
        beside = os.path.join(values["out_dir"], runfiles.BASELINE_MODEL)  # as metrics.py
        if runfiles.needs_classifier(chosen) and not values["eval_classifier"] \
                and os.path.isfile(beside):
            values["eval_classifier"] = beside
        check_request(chosen, values["eval_classifier"], values["inception_weights"],
                      conditional=values["acgan"] == "on", flag="--eval_classifier",
                      metrics_flag="--eval_metrics")
        # the samples' count, now rather than after the first evaluated epoch
        check_counts(chosen, None, None, values["eval_samples"], values["eval_samples"],
                     flag="--eval_samples")
    return resolve_settings(values, EvalOptions)


class GanTrainer:
    """Any GAN of the lessons, for the shared epoch loop (utils.training.Run.fit)."""
    kind = "gan"
    products = runfiles.GAN_MODELS  # what a finished run leaves
    patterns = (r"output/\d{3,}\.png",)  # the per-epoch grids: a fresh run replaces them
    fields = {"generator": WEIGHTS, "discriminator": WEIGHTS, "opt_g": OPTIMIZER,
              "opt_d": OPTIMIZER}
    sums_width = len(D_STATS) + 3  # D_STATS, the generator loss, generator steps, steps

    def __init__(self, settings, nets, opt_g, opt_d, runtime, train, test, z_fixed, quality,
                 classes):
        """train and test are the batches; z_fixed is the grid's noise; quality measures the
        samples every --eval_every epochs (a function of G giving a dict of figures), or None;
        classes are the dataset's class names, for model files."""
        self.settings, self.nets, self.opt_g, self.opt_d = settings, nets, opt_g, opt_d
        self.quality, self.classes = quality, classes
        self.spec = GanSpec.of(settings)
        self.runtime, self.test, self.z_fixed = runtime, test, z_fixed
        self.rank, self.images_per_epoch = train.rank, train.epoch_images
        self.steps_per_epoch = len(train)  # the EMA's warm-up
        self.grids = os.path.join(settings.loop.out_dir, runfiles.GRIDS)

    @property
    def sampler(self):
        """The generator samples come from: the moving average when there is one."""
        return self.nets.G_ema if self.nets.G_ema is not None else self.nets.G

    def entries(self):
        """The checkpoint's networks and optimizers, by entry."""
        entries = {"generator": self.nets.G, "discriminator": self.nets.D, "opt_g": self.opt_g,
                   "opt_d": self.opt_d}
        if self.nets.G_ema is not None:
            entries["generator_ema"] = self.nets.G_ema
        return entries

    def state(self):
        return {key: part.state_dict() for key, part in self.entries().items()}

    def load(self, ckpt, path):
        if self.nets.G_ema is not None and not WEIGHTS.ok(ckpt.get("generator_ema")):
            raise UserError(f"{path} is damaged or from another version: it has no "
                            "'generator_ema' (the moving average --ema keeps)")
        for key, part in self.entries().items():
            load_state(part, ckpt[key], path, key)

    def begin_epoch(self, epoch):
        self.nets.G.train()
        self.nets.D.train()
        self.epoch = epoch

    def step(self, i, real, labels, sums):
        """One iteration. Its random draws come from a generator seeded by (seed, epoch, i,
        rank), so a run resumed at any step draws what an uninterrupted run would."""
        gen = make_generator(real.device, self.settings.seed, "gan", self.epoch, i, self.rank)
        loss_g, loss_d, stats = gan_iteration(self.nets, self.opt_g, self.opt_d, real, labels,
                                              i, self.spec, self.runtime, gen,
                                              self.epoch * self.steps_per_epoch + i)
        n = len(D_STATS)  # in place, with Python scalars: no host-device copies
        sums[:n] += stats
        sums[n] += loss_g
        sums[n + 1] += float(self.spec.trains_generator(i))
        sums[n + 2] += 1
        return loss_d + loss_g

    def means(self, sums):
        """The running sums as means: D_STATS per step, the generator loss per G step; the
        class figures only where there is a class head."""
        s = sums.tolist()
        n, g_steps = max(s[-1], 1.0), max(s[-2], 1.0)
        values = [v / n for v in s[:len(D_STATS)]] + [s[len(D_STATS)] / g_steps]
        return {k: round(v, 4) for k, v in zip(D_STATS + ("g_loss",), values)
                if self.nets.D.num_classes or k not in CLASS_STATS}

    def end_epoch(self, epoch, means, seconds, history):
        record, text, columns = {}, [], self.nets.D.num_classes or 10
        if self.nets.D.num_classes:
            test_acc, _ = evaluate(self.nets.D, self.test, self.runtime)
            record["test_acc"] = round(test_acc, 2)
            text.append(f"test acc {test_acc:.2f} real acc {means['real_acc']:.2f}")
        grid = save_samples(self.sampler, self.z_fixed,
                            os.path.join(self.grids, f"{epoch:03d}.png"), nrow=columns)
        record.update(images_per_s=round(self.images_per_epoch / max(seconds, 1e-9), 1), **means,
                      w_dist=round(means["d_real"] - means["d_fake"], 4))
        text.append(f"d_loss {means['d_loss']:.3f} g_loss {means['g_loss']:.3f}")
        if self.spec.gp_weight:
            text.append(f"gp {means['gp']:.3f}")
        own = self.settings.options
        if self.quality and ((epoch + 1) % own.eval_every == 0
                             or epoch + 1 == self.settings.loop.epochs):
            t0 = time.time()
            figures = {k: v for k, v in self.quality(self.sampler).items()
                       if not isinstance(v, dict)}  # the scalars
            record.update({k: round(v, 4) for k, v in figures.items()},
                          eval_samples=own.eval_samples, eval_seconds=round(time.time() - t0, 2))
            text += [f"{k} {v:.3f}" for k, v in figures.items()]
            if own.keep_best and self.keep_if_best(epoch, record, history):
                text.append(f"(best {own.keep_best} so far: generator_best.model)")
        return EpochEnd(record, " ".join(text), pictures={"samples": (grid, columns)})

    def keep_if_best(self, epoch, record, history):
        """Keep the sampler as generator_best.model when this evaluation's --keep_best figure
        beats every earlier one in the run's history (resumptions included)."""
        key = self.settings.options.keep_best
        value, sign = record.get(key), (1 if key in LOWER_IS_BETTER else -1)
        if value is None or any(sign * h[key] <= sign * value for h in history if key in h):
            return False
        save_model(os.path.join(self.settings.loop.out_dir, runfiles.GENERATOR_BEST_MODEL),
                   self.sampler, self.settings.flat(), {key: value, "epoch": epoch + 1},
                   self.classes, "train_gan.py")
        return True

    def plot(self, history):
        plot_curves(history, CURVE_PANELS["gan"],
                    os.path.join(self.settings.loop.out_dir, runfiles.curves(self.kind)),
                    gan_title(self.settings.flat()) + ", epoch means")


LOWER_IS_BETTER = ("fid", "kid", "cfid")
BEST_KEYS = {"fid": "fid", "kid": "kid", "cfid": "cfid", "is": "is", "cacc": "cacc",
             "cconf": "cconf", "precision": "prc", "recall": "prc", "f_score": "prc"}


def sample_quality(s, data, runtime, classes):
    """A function of the generator: the --eval_metrics of --eval_samples samples against the
    training images (whose features torch-fidelity computes once and caches)."""
    from utils import quality

    own, d = s.options, s.data
    chosen = quality.parse_metrics(own.eval_metrics)
    real_name = quality.real_cache_name(d.dataset, d.data_dir, "train", len(data.train_y),
                                        s.seed if d.subset else None)
    cache_root = os.path.join(d.cache_dir or default_cache_dir(), "fidelity")

    def measure(G):
        was_training = G.training
        fake, labels = sample_generator(G, own.eval_samples, classes, s.seed,
                                        runtime.device, s.gan.noise)
        G.train(was_training)
        return quality.evaluate(fake, labels, data.train_x, data.train_y, chosen,
                                classifier=own.eval_classifier,
                                weights=own.inception_weights, device=runtime.device,
                                cache_root=cache_root, real_name=real_name)

    info(f"sample quality every {own.eval_every} epochs: {', '.join(chosen)} on "
         f"{own.eval_samples} samples")
    return measure


def run(s):
    """Train as the resolved Settings say; returns (final figures, GanNets)."""
    with open_run(s, GanTrainer) as r:
        rt, dist, own = r.runtime, r.dist, s.options
        data, train, test = r.load_data()
        classes = data.num_classes if s.gan.acgan == "on" else 0
        nets, opt_g, opt_d = build_gan(s, classes, rt, dist, data.channels, data.image_size)
        check_batch_statistics(train, nets.G, nets.D)
        if own.eval_every and own.eval_classifier:  # the judge reads these images
            from utils.quality import check_classifier_fits

            check_classifier_fits(own.eval_classifier, data.channels, data.image_size)
        z_fixed, _ = fixed_noise(classes, s.gan.latent_dim, s.seed, rt.device, kind=s.gan.noise)
        quality = sample_quality(s, data, rt, classes) if own.eval_every and dist.is_main else None
        trainer = GanTrainer(s, nets, opt_g, opt_d, rt, train, test, z_fixed, quality,
                             data.classes)
        r.begin(trainer)
        r.say(f"{data.name}: {len(data.train_y)} training images, {len(train)} steps per epoch "
              f"on {rt.device}; samples in {trainer.grids}")
        final = r.fit(trainer, train)
        # seconds: the training steps, over every resumption; eval_seconds: the --eval_every
        # evaluations, which take place after an epoch's steps
        metrics = dict(test_acc=final.get("test_acc"), epochs=s.loop.epochs,
                       seconds=round(r.seconds, 1),
                       eval_seconds=round(sum(h.get("eval_seconds", 0) for h in r.history), 1))
        models = [("generator", nets.G), ("discriminator", nets.D)]
        if nets.G_ema is not None:  # what visualize.py and metrics.py sample from
            models.append(("generator_ema", nets.G_ema))
        for name, module in models:
            metrics[name] = os.path.join(s.loop.out_dir, f"{name}.model")
            r.save_model(metrics[name], module, metrics, data.classes, "train_gan.py")
        return metrics, nets


def main(argv=None):
    settings = resolve(argv)
    if settings.data.download_only:  # a login node: the data, nothing trained
        return download_only(settings, "train_gan")
    metrics, _ = run(settings)
    print_result("train_gan", metrics, dataset=settings.data.dataset, recipe=settings.recipe)
    return metrics


if __name__ == "__main__":
    run_main(main)
