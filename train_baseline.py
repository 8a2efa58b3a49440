"""Part 1, without the generator: the discriminator trained alone as a classifier.

    python train_baseline.py                          # CIFAR-10, the assignment's settings
    python train_baseline.py --data_dir ../shared/data/cifar10   # a PNG copy of CIFAR-10
    python train_baseline.py --resume                 # continue an interrupted run
    python train_baseline.py --dataset digits --width 32 --lr 1e-3 --epochs 15 --out_dir runs/demo
    python train_baseline.py --recipe udacity-batchnorm --data_dir ../shared/data --out_dir runs/bn
    python train_baseline.py --recipe udacity-batchnorm --batch_norm off --data_dir ../shared/data \
        --out_dir runs/no_bn            # the batch-normalization lesson; then visualize.py compare

The assignment's recipe (ie534, the default): Adam (lr 1e-4), batch 128, 100 epochs, the
learning rate divided by 10 at half the epochs and by 100 at three quarters, cross-entropy on
fc10 (87-89% CIFAR-10 test accuracy in the assignment). --recipe udacity-batchnorm is seed
003's lesson: the same MLP with and without BatchNorm on MNIST (recipes.py).

Writes to --out_dir: cifar10.model (weights and settings, which visualize.py loads),
baseline.ckpt (every epoch, for --resume), baseline_log.jsonl, baseline_config.json and
baseline_curves.png. The last line on stdout is JSON with the final figures.
"""
import os

from models import discriminator
from recipes import CLASSIFIER_RECIPES
from utils.checkpoints import OPTIMIZER, WEIGHTS, load_model, load_state, save_model
from utils.classifier import lr_at, train_step
from utils.cli import (POSITIVE_INT, ArgumentParser, UserError, add_shared_flags, print_result,
                       run_main, with_recipe)
from utils.pictures import CURVE_PANELS, plot_curves
from utils.runtime import add_speed_flags, seed_everything
from utils.training import evaluate, open_run

MODEL_FILE = "cifar10.model"  # the assignment's name, whatever the dataset


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


class BaselineTrainer:
    """The discriminator as a classifier, for the shared epoch loop (utils.training.Run.fit)."""
    kind = "baseline"
    products, patterns = (MODEL_FILE,), ()  # what a finished run leaves
    fields = {"model": WEIGHTS, "optimizer": OPTIMIZER}
    sums_width = 3  # cross-entropy sum, correct predictions, images

    def __init__(self, args, model, optimizer, runtime, test, fast=None, classes=()):
        self.args, self.model, self.optimizer, self.runtime = args, model, optimizer, runtime
        self.test, self.classes = test, tuple(classes)
        self.fast = fast or model  # what the step runs through (compiled, DDP); shares weights

    def state(self):
        return {"model": self.model.state_dict(), "optimizer": self.optimizer.state_dict()}

    def load(self, ckpt, path):
        load_state(self.model, ckpt["model"], path)
        load_state(self.optimizer, ckpt["optimizer"], path, "optimizer state")

    def begin_epoch(self, epoch):
        self.model.train()
        if self.args.freeze:
            self.model.blocks.eval()  # frozen features: BatchNorm keeps its statistics
        lr = (lr_at(epoch, self.args.lr, self.args.epochs) if self.args.schedule == "assignment"
              else self.args.lr)
        for group in self.optimizer.param_groups:
            group["lr"] = lr

    def step(self, i, x, y, sums):
        loss, hits = train_step(self.fast, self.optimizer, x, y, self.runtime,
                                self.args.adam_step_cap)
        sums[0] += loss * len(y)  # in place, with Python scalars: no host-device copies
        sums[1] += hits
        sums[2] += len(y)
        return loss

    def means(self, sums):
        loss, hits, n = sums.tolist()
        n = max(n, 1.0)
        return dict(loss=round(loss / n, 4), acc=round(100 * hits / n, 2))

    def end_epoch(self, epoch, means, seconds):
        test_acc, test_loss, by_class = evaluate(self.model, self.test, self.runtime,
                                                 per_class=True)
        record = dict(lr=self.optimizer.param_groups[0]["lr"], train_loss=means["loss"],
                      train_acc=means["acc"], test_loss=round(test_loss, 4),
                      test_acc=round(test_acc, 2))
        text = f"train acc {means['acc']:.2f} test acc {test_acc:.2f}"
        if self.args.eval_bn == "both":  # in batches of --batch_size, as the lesson tests
            train_mode, _ = evaluate(self.model, self.test.rebatched(self.args.batch_size, 2),
                                     self.runtime, batch_statistics=True)
            record["test_acc_train_mode"] = round(train_mode, 2)
            text += f" (in training mode {train_mode:.2f})"
        names = self.classes or tuple(map(str, range(len(by_class))))
        record["test_acc_per_class"] = dict(zip(names, by_class))
        return record, text

    def plot(self, history):
        plot_curves(history, CURVE_PANELS["baseline"],
                    os.path.join(self.args.out_dir, "baseline_curves.png"), "baseline classifier")


def run(args):
    """Train as the flags say; returns (final figures, trained model)."""
    if args.labels_per_class and args.subset:
        raise UserError("--labels_per_class and --subset both choose the training images: "
                        "pass one")
    if args.init and args.width is None:  # the encoder's own width, read from its file
        args.width = load_model(args.init, "discriminator", "train_simclr.py")[0].arch["width"]
    if args.batch_norm == "on" and args.arch != "udacity-mlp":
        raise UserError(f"--batch_norm on: only --arch udacity-mlp takes it (the {args.arch} "
                        "networks' normalisation is part of their design)")
    with open_run(args, BaselineTrainer) as r:
        return _train(args, r)


def init_encoder(model, path):
    """Copy a pre-trained encoder's blocks (a model file of the same family and sizes) into
    the classifier; its heads stay as they were initialised."""
    encoder, ckpt = load_model(path, "discriminator", "train_simclr.py")
    sizes = ("width", "in_channels", "image_size")
    mine = {k: model.arch.get(k) for k in sizes}
    theirs = {k: encoder.arch.get(k) for k in sizes}
    if ckpt["arch"] != model.family or mine != theirs:
        raise UserError(f"--init {path} holds a {ckpt['arch']} encoder {theirs}, and this run "
                        f"builds a {model.family} {mine}: pass the same --arch, --width and "
                        "dataset")
    model.blocks.load_state_dict(encoder.blocks.state_dict())


def _train(args, r):
    rt, dist = r.runtime, r.dist
    data, train, test = r.load_data()
    seed_everything(args.seed)
    options = dict(batch_norm=args.batch_norm == "on") if args.arch == "udacity-mlp" else {}
    model = rt.module(discriminator(args.arch, args.width, data.num_classes, data.channels,
                                    data.image_size, **options))
    model.fc1.requires_grad_(False)  # the critic head plays no part here (and DDP needs to know)
    if args.init and not r.ckpt:  # a resumed run has its own weights
        init_encoder(model, args.init)
    if args.freeze:
        model.blocks.requires_grad_(False)
    optimizer = rt.optimizer(args.optimizer, [p for p in model.parameters() if p.requires_grad],
                             args.lr)
    # The step runs through DDP for several processes, compiled on the fast path; both share
    # the parameters with `model`, which is what gets saved.
    trainer = BaselineTrainer(args, model, optimizer, rt, test,
                              fast=rt.compiled(dist.wrap(model, rt.device)),
                              classes=data.classes)
    if r.ckpt:
        trainer.load(r.ckpt, r.resume_from)
    r.begin()
    r.say(f"{data.name}: {len(data.train_y)} training, {len(data.test_y)} test images; "
          f"{len(train)} steps per epoch on {rt.device}")
    final = r.fit(trainer, train)
    metrics = dict(test_acc=final.get("test_acc"), train_acc=final.get("train_acc"),
                   epochs=args.epochs, seconds=round(r.seconds, 1),
                   model=os.path.join(args.out_dir, MODEL_FILE))
    for key in ("test_acc_train_mode", "test_acc_per_class"):  # when the run measured them
        if key in final:
            metrics[key] = final[key]
    if dist.is_main:
        save_model(metrics["model"], model, r.config, metrics, data.classes, "train_baseline.py")
    return metrics, model


def main(argv=None):
    args = parse_args(argv)
    metrics, _ = run(args)
    print_result("train_baseline", metrics, dataset=args.dataset)
    return metrics


if __name__ == "__main__":
    run_main(main)
