"""Part 1, without the generator: the discriminator trained alone as a classifier.

    python train_baseline.py                          # CIFAR-10, the assignment's settings
    python train_baseline.py --data_dir ../shared/data/cifar10   # a PNG copy of CIFAR-10
    python train_baseline.py --resume                 # continue an interrupted run
    python train_baseline.py --dataset digits --width 32 --lr 1e-3 --epochs 15 --out_dir runs/demo
    python train_baseline.py --recipe udacity-batchnorm --data_dir ../shared/data --out_dir runs/bn
    python train_baseline.py --recipe udacity-batchnorm --batch_norm off --data_dir ../shared/data \
        --out_dir runs/no_bn            # the batch-normalization lesson; then visualize.py compare

Writes to --out_dir: cifar10.model (which visualize.py loads), baseline.ckpt (--resume),
baseline_log.jsonl, baseline_config.json and baseline_curves.png; the last line on stdout is
JSON with the final figures.
"""
import os
from dataclasses import dataclass

from flags import (POSITIVE_INT, ArgumentParser, add_shared_flags, add_speed_flags, download_only,
                   resolve_settings, run_main, with_recipe)
from models import discriminator
from recipes import CLASSIFIER_RECIPES
from utils import runfiles
from utils.checkpoints import OPTIMIZER, WEIGHTS, load_model, load_state
from utils.classifier import lr_at, train_step
from utils.console import print_result
from utils.errors import UserError
from utils.pictures import CURVE_PANELS, plot_curves
from utils.runtime import seed_everything
from utils.trainer import EpochEnd, check_batch_statistics
from utils.training import evaluate, open_run

MODEL_FILE = runfiles.BASELINE_MODEL  # the assignment's name, whatever the dataset


def build_parser():
    p = ArgumentParser(description=__doc__.split("\n\n")[0])
    add_shared_flags(p, epochs=100, lr=1e-4, batch_size=128)
    add_speed_flags(p, training=True)
    g = p.add_argument_group("the classifier")
    g.add_argument("--recipe", choices=tuple(CLASSIFIER_RECIPES), default="ie534",
                   help="set every default to one lesson's classifier (recipes.py); flags still "
                        "override it: " + "; ".join(f"{k}: {r.lesson}" for k, r in
                                                     CLASSIFIER_RECIPES.items()))
    g.add_argument("--optimizer", choices=("adam", "sgd"), default="adam",
                   help="adam (betas 0.9, 0.999: the assignment's) or sgd (no momentum: the "
                        "batch-normalization lesson's)")
    g.add_argument("--schedule", choices=("assignment", "none"), default="assignment",
                   help="the learning rate: the assignment's (divided by 10 at half of --epochs "
                        "and by 100 at three quarters: epochs 50 and 75 of 100) or constant")
    g.add_argument("--batch_norm", choices=("on", "off"), default="off",
                   help="BatchNorm between each hidden layer and its ReLU (--arch udacity-mlp "
                        "only: the batch-normalization lesson compares on and off)")
    g.add_argument("--eval_bn", choices=("eval", "both"), default="eval",
                   help="how the test set is run through BatchNorm: eval (its running "
                        "statistics, as the lessons test) or both (also in training mode, each "
                        "test batch of --batch_size images normalised by its own statistics: "
                        "test_acc_train_mode, the batch-normalization lesson's comparison)")
    g = p.add_argument_group("starting from a pre-trained encoder (SimCLR, seed 004)")
    g.add_argument("--init", default=None,
                   help="start from the encoder in this model file (train_simclr.py's "
                        "simclr.model): its blocks; fc10 starts fresh; --width defaults to "
                        "the encoder's")
    g.add_argument("--freeze", action="store_true",
                   help="train fc10 alone on the frozen features: a linear probe (of the --init "
                        "encoder, or of a randomly initialised one without it)")
    g.add_argument("--labels_per_class", type=POSITIVE_INT, default=None,
                   help="train on N labelled images of each class (a seeded choice)")
    return p


def parse_args(argv=None):
    """The flags, over the recipe's defaults, over the parser's."""
    return with_recipe(build_parser(), CLASSIFIER_RECIPES, argv)


@dataclass(frozen=True)
class BaselineOptions:
    """This command's own settings (the shared ones are utils.settings')."""
    schedule: str = "assignment"
    batch_norm: str = "off"
    eval_bn: str = "eval"
    init: str = None  # a SimCLR encoder's model file
    freeze: bool = False


def resolve(argv=None):
    """The command line resolved once into Settings: the flags checked together, the width
    of an --init encoder read from its file."""
    values = vars(parse_args(argv))
    if values["labels_per_class"] and values["subset"]:
        raise UserError("--labels_per_class and --subset both choose the training images: "
                        "pass one")
    if values["batch_norm"] == "on" and values["arch"] != "udacity-mlp":
        raise UserError(f"--batch_norm on: only --arch udacity-mlp takes it (the "
                        f"{values['arch']} networks' normalisation is part of their design)")
    if values["init"] and values["width"] is None:  # the encoder's own width, from its file
        values["width"] = load_model(values["init"], "discriminator",
                                     "train_simclr.py")[0].build_args["width"]
    return resolve_settings(values, BaselineOptions)


def schedule_note(s):
    """A word where the assignment's schedule divides the rate within a short run (with
    --epochs 2 the second epoch trains at lr / 100): said, not silently done."""
    epochs, lr = s.loop.epochs, s.optim.lr
    drops = [e for e in range(1, epochs) if lr_at(e, lr, epochs) < lr_at(e - 1, lr, epochs)]
    if s.options.schedule != "assignment" or epochs >= 100 or not drops:
        return None
    return ("note: the assignment's schedule, scaled to --epochs "
            f"{epochs}: " + ", ".join(f"from epoch {e + 1} lr {lr_at(e, lr, epochs):.3g}"
                                      for e in drops)
            + " (--schedule none keeps the rate constant)")


class BaselineTrainer:
    """The discriminator as a classifier, for the shared epoch loop (utils.training.Run.fit)."""
    kind = "baseline"
    products, patterns = (MODEL_FILE,), ()  # what a finished run leaves
    fields = {"model": WEIGHTS, "optimizer": OPTIMIZER}
    sums_width = 3  # cross-entropy sum, correct predictions, images

    def __init__(self, settings, model, optimizer, runtime, test, fast=None, classes=()):
        self.settings, self.model, self.optimizer, self.runtime = (settings, model, optimizer,
                                                                   runtime)
        self.test, self.classes = test, tuple(classes)
        self.fast = model if fast is None else fast  # compiled, DDP: shares the weights

    def state(self):
        return {"model": self.model.state_dict(), "optimizer": self.optimizer.state_dict()}

    def load(self, ckpt, path):
        load_state(self.model, ckpt["model"], path)
        load_state(self.optimizer, ckpt["optimizer"], path, "optimizer state")

    def begin_epoch(self, epoch):
        s = self.settings
        self.model.train()
        if s.options.freeze:
            self.model.blocks.eval()  # frozen features: BatchNorm keeps its statistics
        lr = (lr_at(epoch, s.optim.lr, s.loop.epochs) if s.options.schedule == "assignment"
              else s.optim.lr)
        for group in self.optimizer.param_groups:
            group["lr"] = lr

    def step(self, i, x, y, sums):
        loss, hits = train_step(self.fast, self.optimizer, x, y, self.runtime,
                                self.settings.optim.adam_step_cap)
        sums[0] += loss * len(y)  # in place, with Python scalars: no host-device copies
        sums[1] += hits
        sums[2] += len(y)
        return loss

    def means(self, sums):
        loss, hits, n = sums.tolist()
        n = max(n, 1.0)
        return dict(loss=round(loss / n, 4), acc=round(100 * hits / n, 2))

    def end_epoch(self, epoch, means, seconds, history):
        test_acc, test_loss, by_class = evaluate(self.model, self.test, self.runtime,
                                                 per_class=True)
        record = dict(lr=self.optimizer.param_groups[0]["lr"], train_loss=means["loss"],
                      train_acc=means["acc"], test_loss=round(test_loss, 4),
                      test_acc=round(test_acc, 2))
        text = (f"lr {record['lr']:.3g} train acc {means['acc']:.2f} test acc "
                f"{test_acc:.2f}")
        if self.settings.options.eval_bn == "both":  # in batches of --batch_size, as the lesson
            batches = self.test.rebatched(self.settings.data.batch_size, 2)
            train_mode, _ = evaluate(self.model, batches, self.runtime, batch_statistics=True)
            record["test_acc_train_mode"] = round(train_mode, 2)
            text += f" (in training mode {train_mode:.2f})"
        names = self.classes or tuple(map(str, range(len(by_class))))
        record["test_acc_per_class"] = dict(zip(names, by_class))
        return EpochEnd(record, text)

    def plot(self, history):
        plot_curves(history, CURVE_PANELS["baseline"],
                    os.path.join(self.settings.loop.out_dir, runfiles.curves(self.kind)),
                    "baseline classifier")


def init_encoder(model, path):
    """Copy a pre-trained encoder's blocks (a model file of the same family and sizes) into
    the classifier; its heads stay as they were initialised."""
    encoder, ckpt = load_model(path, "discriminator", "train_simclr.py")
    sizes = ("width", "in_channels", "image_size")
    mine = {k: model.build_args.get(k) for k in sizes}
    theirs = {k: encoder.build_args.get(k) for k in sizes}
    if ckpt["family"] != model.family or mine != theirs:
        raise UserError(f"--init {path} holds a {ckpt['family']} encoder {theirs}, and this run "
                        f"builds a {model.family} {mine}: pass the same --arch, --width and "
                        "dataset")
    model.blocks.load_state_dict(encoder.blocks.state_dict())


def run(s):
    """Train as the resolved Settings say; returns (final figures, trained model)."""
    with open_run(s, BaselineTrainer) as r:
        rt, dist, own = r.runtime, r.dist, s.options
        data, train, test = r.load_data()
        seed_everything(s.seed)
        extra = dict(batch_norm=own.batch_norm == "on") if s.model.arch == "udacity-mlp" else {}
        model = rt.module(discriminator(s.model.arch, s.model.width, data.num_classes,
                                        data.channels, data.image_size, **extra))
        model.fc1.requires_grad_(False)  # the critic head plays no part (and DDP needs to know)
        check_batch_statistics(train, model)
        if own.init and not r.ckpt:  # a resumed run has its own weights
            init_encoder(model, own.init)
        if own.freeze:
            model.blocks.requires_grad_(False)
        optimizer = rt.optimizer(s.optim.optimizer,
                                 [p for p in model.parameters() if p.requires_grad], s.optim.lr)
        # The step runs through DDP for several processes, compiled on the fast path; both
        # share the parameters with `model`, which is what gets saved.
        trainer = BaselineTrainer(s, model, optimizer, rt, test,
                                  fast=rt.compiled(dist.wrap(model, rt.device)),
                                  classes=data.classes)
        r.begin(trainer)
        r.say(f"{data.name}: {len(data.train_y)} training, {len(data.test_y)} test images; "
              f"{len(train)} steps per epoch on {rt.device}")
        if note := schedule_note(s):
            r.say(note)
        if own.init:
            r.say(f"--init: the blocks start from the encoder in {own.init}" +
                  (" (a resumed run goes on from its checkpoint instead)" if r.ckpt else
                   "; fc10 starts fresh"))
        if own.freeze:
            trained = sum(p.numel() for p in model.parameters() if p.requires_grad)
            r.say(f"--freeze: the blocks stay as they are (BatchNorm's statistics too); only "
                  f"fc10 trains, {trained:,} parameters (a linear probe)")
        final = r.fit(trainer, train)
        metrics = dict(test_acc=final.get("test_acc"), train_acc=final.get("train_acc"),
                       epochs=s.loop.epochs, seconds=round(r.seconds, 1),
                       model=os.path.join(s.loop.out_dir, MODEL_FILE))
        metrics.update({k: final[k] for k in ("test_acc_train_mode", "test_acc_per_class")
                        if k in final})  # when the run measured them
        r.save_model(metrics["model"], model, metrics, data.classes, "train_baseline.py")
        return metrics, model


def main(argv=None):
    settings = resolve(argv)
    if settings.data.download_only:  # a login node: the data, nothing trained
        return download_only(settings, "train_baseline")
    metrics, _ = run(settings)
    print_result("train_baseline", metrics, dataset=settings.data.dataset)
    return metrics


if __name__ == "__main__":
    run_main(main)
