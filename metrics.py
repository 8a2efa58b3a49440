"""How good are the samples: FID, Inception Score and KID through torch-fidelity, and two
metrics that need no download, from this project's own classifier.

    python metrics.py runs/cifar10                 # the run's generator: FID and IS on 50,000
                                                   # samples against its training set
    python metrics.py runs/cifar10 --metrics fid,is,kid,cfid,cacc --intra
    python metrics.py runs/dcgan/fakes --real mnist --data_dir ../shared/data
    python metrics.py runs/cifar10 --inception_weights ~/weights-inception-2015-12-05-6726825d.pth
    python metrics.py runs/cifar10 --metrics cfid,cacc --classifier runs/cifar10/cifar10.model
    python metrics.py runs/dcgan --metrics cfid,cconf --classifier runs/judge/cifar10.model \
        --real mnist --split test --n_samples 10000 # an unconditional MNIST generator
    python metrics.py mnist --metrics cfid --classifier runs/judge/cifar10.model --real mnist \
        --split test --n_samples 10000             # the floor: real training images instead

FAKE is a run folder, a folder of PNG files (_cK marks class K) or a dataset name; REAL a
dataset name or a folder. The metrics, the cache and offline use: docs/metrics.md.
"""
import json
import os
import time

from flags import POSITIVE_INT, SEED, ArgumentParser, run_main
from utils import runfiles
from utils.checkpoints import load_model
from utils.console import info, tidy
from utils.errors import UserError
from utils.data import DATASETS, default_cache_dir, load_dataset
from utils.figures.samples import check_foreign_images, export_complete, read_mark
from utils.files import (NoSpace, atomic_write_json, check_writable_folder, file_digest,
                         update_json)
from utils.quality import (INCEPTION, INCEPTION_METRICS, METRICS, check_classifier_fits,
                           check_counts, check_request, evaluate, judge_strength, parse_metrics,
                           read_folder, real_cache_name, seeded_share)
from utils.runtime import resolve_device
from utils.sampling import conditioning, sample_generator


def build_parser():
    p = ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("fake", help="a run folder (its generator is sampled), a folder of PNG files, "
                                "or a dataset name (its training images: a distance's floor)")
    p.add_argument("--real", default=None,
                   help="a dataset name or a folder of PNG files (default: the run's dataset)")
    p.add_argument("--data_dir", default=None, help="where the dataset lives (default: the run's)")
    p.add_argument("--split", choices=("train", "test"), default="train",
                   help="which split of the dataset is the real data")
    p.add_argument("--metrics", default="fid,is",
                   help=f"comma-separated, from {', '.join(METRICS)}")
    p.add_argument("--intra", action="store_true",
                   help="also each distance per class (intra-FID) and its mean")
    p.add_argument("--n_samples", type=POSITIVE_INT, default=50000,
                   help="samples drawn from a generator (50,000: what papers report FID and IS "
                        "on); for a folder of PNG files or a dataset, at most this many of its "
                        "images, drawn with --seed")
    p.add_argument("--n_real", type=POSITIVE_INT, default=None,
                   help="real images used, drawn with --seed (default every image of the split)")
    p.add_argument("--splits", type=POSITIVE_INT, default=10, help="Inception Score splits")
    p.add_argument("--classifier", default=None,
                   help="the classifier for cfid and cacc (default RUN/cifar10.model, what "
                        "train_baseline.py writes)")
    p.add_argument("--inception_weights", default=None,
                   help="torch-fidelity's InceptionV3 weights file, for machines without "
                        "internet (weights-inception-2015-12-05-6726825d.pth)")
    p.add_argument("--feature_extractor", default=INCEPTION,
                   help="the extractor torch-fidelity uses for fid, is and kid")
    p.add_argument("--cache_dir", default=None,
                   help="where the real images' features are cached (default "
                        "~/.cache/cnn_gan/fidelity); also the decoded image folders' cache")
    p.add_argument("--batch_size", type=POSITIVE_INT, default=250, help="images per batch")
    p.add_argument("--device", default="auto",
                   help="auto (cuda when available), cpu, cuda, cuda:N")
    p.add_argument("--seed", type=SEED, default=0,
                   help="seed of the samples drawn, and of the images drawn from a dataset or a "
                        "folder where fewer are used")
    return p


def check_run_writable(run_dir):
    """metrics.json goes into the run folder: a read-only one is refused before any work."""
    try:
        check_writable_folder(run_dir)
    except NoSpace:
        raise
    except UserError:
        raise UserError(f"cannot write metrics.json into {run_dir} (a read-only folder, or "
                        "another user's): copy the run folder where you can write and measure "
                        "the copy") from None


def main(argv=None):
    args = build_parser().parse_args(argv)
    metrics = parse_metrics(args.metrics)
    device = resolve_device(args.device)
    t0 = time.time()
    run_dir = (args.fake if os.path.isfile(os.path.join(args.fake, runfiles.GENERATOR_MODEL))
               else None)
    generator_file = os.path.basename(runfiles.sampler(run_dir)) if run_dir else None
    if generator_file == runfiles.GENERATOR_EMA_MODEL:  # --ema's moving average, as visualize.py
        info(f"sampling the generator's moving average ({generator_file})")
    classifier = args.classifier or (os.path.join(run_dir, runfiles.BASELINE_MODEL) if run_dir
                                     else None)
    check = dict(classifier=classifier, weights=args.inception_weights,
                 extractor=args.feature_extractor)
    settings = {}
    check_counts(metrics, None, None, args.n_samples, args.n_real or args.n_samples, args.splits)
    if run_dir:  # everything checked before the samples are drawn
        check_run_writable(run_dir)
        G, ckpt, g_digest = load_model(os.path.join(run_dir, generator_file), "generator",
                                       "train_gan.py", identity=True)
        settings = ckpt["settings"]
        num_classes, kind = conditioning(ckpt)
        check_request(metrics, conditional=num_classes > 0, classes=ckpt["classes"], **check)
        # what the figures are made from, as loaded now (the report checks it)
        used = {generator_file: runfiles.made_from(os.path.join(run_dir, generator_file),
                                                   run_dir, g_digest)}
        if runfiles.needs_classifier(metrics):
            check_classifier_fits(classifier, G.build_args["out_channels"],
                                  G.build_args["image_size"])
            used[os.path.basename(classifier)] = runfiles.made_from(
                classifier, run_dir, file_digest(classifier))
        fake, fake_labels = sample_generator(G, args.n_samples, num_classes, args.seed, device,
                                             kind, args.batch_size)
    elif os.path.isdir(args.fake):
        if not export_complete(args.fake):  # cut short, or being replaced right now
            raise UserError(f"{args.fake} holds an export that did not finish (interrupted, or "
                            "still being written): run visualize.py export again and wait for "
                            "it to end")
        check_foreign_images(args.fake, read_mark(args.fake))
        fake, fake_labels = read_folder(args.fake, args.n_samples, args.seed)
        check_request(metrics, conditional=fake_labels is not None, **check)
    elif args.fake in DATASETS:  # real images in the fakes' place: the floor of a distance
        check_request(metrics, conditional=True, **check)
        data = load_dataset(args.fake, args.data_dir or "./data", args.cache_dir)
        fake, fake_labels, _ = seeded_share(data.train_x, data.train_y, args.n_samples, args.seed)
    else:
        raise UserError(f"{args.fake} is neither a run folder (with generator.model), a "
                        f"folder of PNG files, nor a dataset ({', '.join(DATASETS)})")

    real_arg = args.real or settings.get("dataset") or (args.fake if args.fake in DATASETS
                                                         else None)
    if real_arg is None:
        raise UserError("--real: name the dataset or a folder of real PNG files")
    cache_root = os.path.join(args.cache_dir or default_cache_dir(), "fidelity")
    if os.path.isdir(real_arg):
        real, real_labels = read_folder(real_arg, args.n_real, args.seed)
        real_name = None  # a folder's content may change: not cached
    elif real_arg in DATASETS:
        data_dir = args.data_dir or settings.get("data_dir", "./data")
        data = load_dataset(real_arg, data_dir, args.cache_dir)
        real, real_labels = ((data.train_x, data.train_y) if args.split == "train"
                             else (data.test_x, data.test_y))
        real, real_labels, chosen = seeded_share(real, real_labels, args.n_real, args.seed)
        real_name = real_cache_name(real_arg, data_dir, args.split, len(real), chosen)
    else:
        raise UserError(f"--real {real_arg}: not a folder, nor one of {', '.join(DATASETS)}")
    if args.n_real and args.n_real > len(real):
        info(f"--n_real {args.n_real}: {real_arg} has {len(real)} images here; all are used")
    if runfiles.needs_classifier(metrics):  # the judge reads images of the fakes' shape
        check_classifier_fits(classifier, fake.shape[1], fake.shape[-1])
    check_counts(metrics, fake_labels, real_labels, len(fake), len(real), args.splits, args.intra)
    if fake.shape[1:] != real.shape[1:] and {"fid", "kid", "cfid"} & set(metrics):
        info(f"note: fake images {tuple(fake.shape[1:])} and real {tuple(real.shape[1:])} "
             "differ in shape; the extractor resizes both")
    info(f"{len(fake)} fake and {len(real)} real images; metrics {', '.join(metrics)}")
    figures = evaluate(fake, fake_labels, real, real_labels, metrics, classifier=classifier,
                       intra=args.intra, extractor=args.feature_extractor,
                       weights=args.inception_weights, device=device, cache_root=cache_root,
                       real_name=real_name, splits=args.splits, batch_size=args.batch_size)
    result = dict(script="metrics", fake=args.fake, real=real_arg, split=args.split,
                  n_fake=len(fake), n_real=len(real), **figures,
                  seconds=round(time.time() - t0, 1))
    if set(INCEPTION_METRICS) & set(metrics):
        result["extractor"] = args.feature_extractor
    if runfiles.needs_classifier(metrics):
        result["classifier"] = classifier
        result["judge_test_acc"], judged = judge_strength(classifier)
        info(judged)
    result = tidy(result)  # the same numbers in the files and on the final line
    for k, v in figures.items():
        if not isinstance(v, dict):
            info(f"{k}: {v:.4g}")
    if run_dir:
        result["made_from"] = used
        atomic_write_json(os.path.join(run_dir, "metrics.json"), result)
        update_json(os.path.join(run_dir, runfiles.VISUALIZATION, runfiles.SUMMARY), "metrics",
                    result)
    print(json.dumps(result), flush=True)
    return result


if __name__ == "__main__":
    run_main(main)
