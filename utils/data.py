"""Datasets chosen by name, held in memory as uint8, and batched augmentation.

Every dataset is decoded once into uint8 tensors of shape (N, C, S, S); batches are cut
from them, moved to the training device and augmented there, a whole batch at a time, with
per-sample random parameters. All randomness of the data comes from generators seeded by
(seed, epoch, batch, rank), so any batch of any epoch can be rebuilt exactly: this is what
makes a resumed run equal an uninterrupted one.

    cifar10        torchvision's CIFAR10 (downloaded when missing), or a folder as below
    folder         DIR/train/<class>/*.png and DIR/test/<class>/*.png, 32x32; decoded once, cached
    digits         scikit-learn's 8x8 handwritten digits upsampled to 32x32 RGB: small, offline
    mnist          torchvision's MNIST, 28x28 grey (DATA_DIR/MNIST/raw), downloaded when missing
    fashion_mnist  torchvision's FashionMNIST, 28x28 grey (DATA_DIR/FashionMNIST/raw)
    svhn           the Street View House Numbers, 32x32 RGB (DATA_DIR/{train,test}_32x32.mat)
"""
import contextlib
import hashlib
import math
import os
import sys
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse",
                   "ship", "truck")
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp")


class DataError(Exception):
    """A dataset that cannot be found or read; the message says what to do."""


@dataclass
class ImageData:
    """A whole dataset in memory: images uint8 (N, C, S, S), labels int64 (N,)."""
    name: str
    train_x: torch.Tensor
    train_y: torch.Tensor
    test_x: torch.Tensor
    test_y: torch.Tensor
    classes: tuple
    flip: bool  # horizontal flips suit this dataset (not digits)

    @property
    def num_classes(self):
        return len(self.classes)

    @property
    def channels(self):
        return self.train_x.shape[1]

    @property
    def image_size(self):
        return self.train_x.shape[-1]


def derive_seed(*keys):
    """A 63-bit seed that is a pure function of the keys (run seed, epoch, batch, rank, ...)."""
    digest = hashlib.blake2b(repr(keys).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") >> 1


def make_generator(device, *keys):
    return torch.Generator(device=device).manual_seed(derive_seed(*keys))


# ----------------------------------------------------------------------------- loading

def _decode_folder(split_dir, classes=None):
    """Decode DIR/<class>/* into uint8 (N, 3, H, W) and labels; classes sorted by name."""
    from PIL import Image, UnidentifiedImageError

    if classes is None:
        classes = sorted(d for d in os.listdir(split_dir)
                         if os.path.isdir(os.path.join(split_dir, d)))
    images, labels = [], []
    for label, name in enumerate(classes):
        class_dir = os.path.join(split_dir, name)
        if not os.path.isdir(class_dir):
            raise DataError(f"{split_dir} has no folder '{name}': train/ and test/ must hold "
                            "the same class folders")
        for fname in sorted(os.listdir(class_dir)):
            if not fname.lower().endswith(IMAGE_EXTENSIONS):
                continue
            path = os.path.join(class_dir, fname)
            try:
                with Image.open(path) as im:
                    img = np.asarray(im.convert("RGB"))  # (H, W, 3) uint8, grey made RGB
            except (OSError, UnidentifiedImageError) as e:
                raise DataError(f"cannot decode image {path}: {e}") from None
            if img.shape[:2] != (32, 32):
                raise DataError(f"{path} is {img.shape[1]}x{img.shape[0]}; images must be 32x32 "
                                "(resize your folder first)")
            images.append(img)
            labels.append(label)
    if not images:
        raise DataError(f"no images found under {split_dir}: expected "
                        f"{split_dir}/<class>/*.png")
    images = torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).contiguous()
    return images, torch.tensor(labels, dtype=torch.int64), tuple(classes)


def _folder_signature(root):
    """What the cache key depends on: the path and every file's name, size and mtime."""
    h = hashlib.sha1(os.path.abspath(root).encode())
    for split in ("train", "test"):
        for dirpath, dirnames, filenames in os.walk(os.path.join(root, split)):
            dirnames.sort()
            for f in sorted(filenames):
                st = os.stat(os.path.join(dirpath, f))
                h.update(f"{dirpath}/{f}:{st.st_size}:{st.st_mtime_ns}".encode())
    return h.hexdigest()[:16]


def default_cache_dir():
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "cnn_gan")


def load_folder(root, cache_dir=None, name="folder"):
    """An image folder with train/<class>/ and test/<class>/, decoded once and cached as .npz."""
    for split in ("train", "test"):
        if not os.path.isdir(os.path.join(root, split)):
            raise DataError(f"{root} has no {split}/ folder: --data_dir must hold "
                            "train/<class>/*.png and test/<class>/*.png")
    cache_dir = cache_dir or default_cache_dir()
    cache = os.path.join(cache_dir, f"folder-{_folder_signature(root)}.npz")
    if os.path.exists(cache):
        try:
            with np.load(cache) as z:
                arrays = {k: torch.from_numpy(z[k].copy()) for k in
                          ("train_x", "train_y", "test_x", "test_y")}
                classes = tuple(str(c) for c in z["classes"])
            return ImageData(name, classes=classes, flip=True, **arrays)
        except (OSError, ValueError, KeyError):
            pass  # a damaged cache is rebuilt below
    print(f"decoding {root} (once; cached in {cache_dir})", file=sys.stderr)
    train_x, train_y, classes = _decode_folder(os.path.join(root, "train"))
    test_x, test_y, _ = _decode_folder(os.path.join(root, "test"), classes)
    try:
        os.makedirs(cache_dir, exist_ok=True)
        tmp = f"{cache}.{os.getpid()}.tmp.npz"
        np.savez(tmp, train_x=train_x.numpy(), train_y=train_y.numpy(), test_x=test_x.numpy(),
                 test_y=test_y.numpy(), classes=np.array(classes))
        os.replace(tmp, cache)
    except OSError as e:  # a read-only home is no reason to stop
        print(f"warning: could not write the cache {cache}: {e}", file=sys.stderr)
    return ImageData(name, train_x, train_y, test_x, test_y, classes, flip=True)


def load_cifar10(data_dir, cache_dir=None):
    """CIFAR-10 from torchvision's files in data_dir (downloaded when missing) or a PNG folder."""
    for root in (data_dir, os.path.join(data_dir, "cifar10")):
        if os.path.isdir(os.path.join(root, "train")) and os.path.isdir(os.path.join(root, "test")):
            data = load_folder(root, cache_dir, name="cifar10")
            if data.classes != CIFAR10_CLASSES:
                raise DataError(f"{root} holds classes {list(data.classes)}, not CIFAR-10's; "
                                "use --dataset folder for other image folders")
            return data
    import torchvision

    present = os.path.isdir(os.path.join(data_dir, "cifar-10-batches-py"))
    try:
        # torchvision prints download progress on stdout, which is kept for the final JSON line
        with contextlib.redirect_stdout(sys.stderr):
            sets = [torchvision.datasets.CIFAR10(data_dir, train=t, download=not present)
                    for t in (True, False)]
    except Exception as e:  # URLError, OSError, RuntimeError: all mean "no usable copy here"
        raise DataError(
            f"CIFAR-10 is not in {data_dir} and could not be downloaded ({type(e).__name__}: "
            f"{e}). Point --data_dir at a folder holding cifar-10-batches-py or a PNG copy "
            "(train/<class>/*.png, test/<class>/*.png)") from None
    (tx, ty), (vx, vy) = [(torch.from_numpy(s.data).permute(0, 3, 1, 2).contiguous(),
                           torch.tensor(s.targets, dtype=torch.int64)) for s in sets]
    return ImageData("cifar10", tx, ty, vx, vy, CIFAR10_CLASSES, flip=True)


def load_digits(data_dir=None, cache_dir=None):
    """scikit-learn's 1,797 8x8 digits (values 0..16), upsampled to 32x32 RGB uint8.

    A fixed split (seeded permutation): 1,500 train, 297 test images.
    """
    try:
        from sklearn.datasets import load_digits as sk_digits
    except ImportError:
        raise DataError("the digits dataset needs scikit-learn: pip install scikit-learn") from None
    d = sk_digits()
    x = torch.from_numpy(d.images).float().unsqueeze(1) / 16.0  # (N, 1, 8, 8) in [0, 1]
    x = F.interpolate(x, size=(32, 32), mode="bilinear", align_corners=False)
    x = (x.clamp(0, 1) * 255).round().to(torch.uint8).expand(-1, 3, -1, -1).contiguous()
    y = torch.from_numpy(d.target).long()
    perm = torch.randperm(len(y), generator=torch.Generator().manual_seed(0))
    tr, te = perm[:1500], perm[1500:]
    return ImageData("digits", x[tr], y[tr], x[te], y[te], tuple(str(i) for i in range(10)),
                     flip=False)


def _torchvision(dataset, data_dir, what, **kw):
    """A torchvision dataset, downloaded into data_dir when missing (progress on stderr:
    stdout is kept for the final JSON line); offline and absent: a DataError."""
    import torchvision

    try:
        with contextlib.redirect_stdout(sys.stderr):
            return getattr(torchvision.datasets, dataset)(data_dir, download=True, **kw)
    except Exception as e:  # URLError, OSError, RuntimeError: all mean "no usable copy here"
        raise DataError(f"{what} is not in {data_dir} and could not be downloaded "
                        f"({type(e).__name__}: {e}). Point --data_dir at the folder holding "
                        f"{what}") from None


def _load_mnist_like(dataset, data_dir, classes, flip):
    """MNIST or FashionMNIST in torchvision's layout: uint8 (N, 1, 28, 28)."""
    sets = [_torchvision(dataset, data_dir, f"{dataset}/raw", train=t) for t in (True, False)]
    (tx, ty), (vx, vy) = [(s.data.unsqueeze(1).contiguous(), s.targets.long()) for s in sets]
    name = "mnist" if dataset == "MNIST" else "fashion_mnist"
    return ImageData(name, tx, ty, vx, vy, classes, flip=flip)


def load_mnist(data_dir, cache_dir=None):
    return _load_mnist_like("MNIST", data_dir, tuple(str(i) for i in range(10)), flip=False)


FASHION_CLASSES = ("t-shirt", "trouser", "pullover", "dress", "coat", "sandal", "shirt",
                   "sneaker", "bag", "ankle-boot")


def load_fashion_mnist(data_dir, cache_dir=None):
    return _load_mnist_like("FashionMNIST", data_dir, FASHION_CLASSES, flip=True)


def load_svhn(data_dir, cache_dir=None):
    """SVHN's train_32x32.mat and test_32x32.mat (downloaded when missing), read directly:
    X is (32, 32, 3, N) uint8 and y (N, 1) with 10 standing for the digit 0."""
    import scipy.io

    out = []
    for split in ("train", "test"):
        path = os.path.join(data_dir, f"{split}_32x32.mat")
        if not os.path.exists(path):
            _torchvision("SVHN", data_dir, f"{split}_32x32.mat", split=split)
        try:
            mat = scipy.io.loadmat(path)
            x = torch.from_numpy(np.ascontiguousarray(np.transpose(mat["X"], (3, 2, 0, 1))))
            y = torch.from_numpy(mat["y"].astype(np.int64).reshape(-1))
        except (OSError, ValueError, KeyError, TypeError, scipy.io.matlab.MatReadError) as e:
            raise DataError(f"{path} is not an SVHN file ({type(e).__name__}: {e})") from None
        if x.dtype != torch.uint8 or x.shape[1:] != (3, 32, 32) or len(x) != len(y) \
                or not ((y >= 1) & (y <= 10)).all():
            raise DataError(f"{path} is not an SVHN file: X must be 32x32x3xN uint8 and y the "
                            "N labels 1..10")
        out += [x, torch.where(y == 10, 0, y)]  # the label 10 marks the digit 0
    return ImageData("svhn", *out, tuple(str(i) for i in range(10)), flip=False)


DATASETS = {
    "cifar10": load_cifar10,
    "folder": load_folder,
    "digits": load_digits,
    "mnist": load_mnist,
    "fashion_mnist": load_fashion_mnist,
    "svhn": load_svhn,
}


def load_dataset(name, data_dir, cache_dir=None, subset=None, seed=0, labels_per_class=None):
    """Load a dataset by name; subset keeps N training images chosen by a seeded permutation,
    labels_per_class the first N of each class in that permutation (the few labelled images of
    a semi-supervised comparison)."""
    if name not in DATASETS:
        raise DataError(f"unknown dataset '{name}'; choose one of {', '.join(DATASETS)}")
    if name == "folder":
        if not os.path.isdir(data_dir):
            raise DataError(f"data directory {data_dir} does not exist")
        if not os.listdir(data_dir):
            raise DataError(f"data directory {data_dir} is empty")
    data = DATASETS[name](data_dir, cache_dir)
    if subset is not None:
        if subset > len(data.train_y):
            raise DataError(f"--subset {subset} is larger than the {len(data.train_y)} training "
                            f"images of {name}")
        keep = torch.randperm(len(data.train_y), generator=make_generator("cpu", seed, "subset"))
        keep = keep[:subset].sort().values
        data.train_x, data.train_y = data.train_x[keep], data.train_y[keep]
    if labels_per_class is not None:
        counts = torch.bincount(data.train_y, minlength=data.num_classes)
        if labels_per_class > counts.min():
            raise DataError(f"--labels_per_class {labels_per_class}: {name}'s smallest class has "
                            f"{counts.min().item()} training images")
        order = torch.randperm(len(data.train_y), generator=make_generator("cpu", seed, "labels"))
        ranks = torch.zeros_like(order)  # each image's place among its class in the order
        ranked = data.train_y[order]
        for c in range(data.num_classes):
            ranks[order[ranked == c]] = torch.arange(int((ranked == c).sum()))
        keep = (ranks < labels_per_class).nonzero()[:, 0]
        data.train_x, data.train_y = data.train_x[keep], data.train_y[keep]
    return data


# ----------------------------------------------------------------------------- batching

def to_float(x_uint8):
    """uint8 images in [0, 255] -> float in [-1, 1], as ToTensor + Normalize(0.5, 0.5)."""
    return x_uint8.float().div_(127.5).sub_(1.0)


class Batches:
    """Batches of a uint8 dataset as float tensors in [-1, 1] on a device.

    epoch(e, start) yields (x, y) for batch indices start.. of epoch e; the shuffle and the
    augmentation of every batch depend only on (seed, e, batch index, rank). Under several
    processes, each rank takes every world_size-th image of the shuffled order.
    """

    def __init__(self, images, labels, batch_size, device="cpu", *, seed=0, shuffle=False,
                 drop_last=False, min_last=1, augment=None, rank=0, world_size=1,
                 on_device=False, memory_format=torch.contiguous_format):
        self.device = torch.device(device)
        # On the GPU fast path the whole uint8 dataset lives on the device (CIFAR-10: 150 MB),
        # so a batch is an index into it, with no host-to-device copy in the step loop.
        where = self.device if on_device else "cpu"
        self.images, self.labels = images.to(where), labels.to(where)
        self.batch_size, self.seed = batch_size, seed
        self.shuffle, self.drop_last, self.augment = shuffle, drop_last, augment
        self.min_last = min_last  # a smaller last batch is kept when it has this many images
        self.rank, self.world_size = rank, world_size
        self.memory_format = memory_format
        self.per_rank = len(labels) // world_size  # equal shares: ranks step in lockstep

    def __len__(self):
        n, b = self.per_rank, self.batch_size
        return n // b + int(not self.drop_last and n % b >= self.min_last)

    @property
    def epoch_images(self):
        """Images an epoch goes through, over every process."""
        return min(len(self) * self.batch_size, self.per_rank) * self.world_size

    def order(self, epoch):
        n = len(self.labels)
        idx = (torch.randperm(n, generator=make_generator("cpu", self.seed, "shuffle", epoch))
               if self.shuffle else torch.arange(n))
        return idx[self.rank:self.per_rank * self.world_size:self.world_size]

    def epoch(self, epoch, start=0):
        idx = self.order(epoch).to(self.images.device)
        pin = self.images.device.type == "cpu" and self.device.type == "cuda"
        for i in range(start, len(self)):
            sel = idx[i * self.batch_size:(i + 1) * self.batch_size]
            x, y = self.images[sel], self.labels[sel]
            if pin:  # an asynchronous copy needs page-locked memory
                x, y = x.pin_memory(), y.pin_memory()
            x = x.to(self.device, non_blocking=True)
            y = y.to(self.device, non_blocking=True)
            if self.augment is None:
                x = to_float(x)
            else:  # the transforms work in [0, 1], as torchvision's do before Normalize
                g = make_generator(self.device, self.seed, "augment", epoch, i, self.rank)
                x = self.augment(x.float().div_(255), g).mul_(2).sub_(1)
            yield x.contiguous(memory_format=self.memory_format), y
