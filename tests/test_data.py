import json
import os
from urllib.error import URLError

import numpy as np
import pytest
import torch
import torchvision.transforms.v2 as T
import torchvision.transforms.v2.functional as TF
from conftest import run_cli
from PIL import Image

import train_gan
from utils.augment import Augment, adjust_hue, color_jitter, jitter_strengths, resized_crop
from utils.data import Batches, DataError, load_dataset, load_folder, make_generator


def test_crop_equals_torchvision_resized_crop():
    torch.manual_seed(0)
    x = torch.rand(8, 3, 32, 32)
    side = torch.tensor([27, 28, 29, 30, 31, 32, 27, 30])
    top = torch.tensor([0, 4, 3, 1, 0, 0, 5, 2])
    left = torch.tensor([5, 0, 2, 2, 1, 0, 0, 1])
    ours = resized_crop(x, top, left, side, 32)
    ref = torch.stack([TF.resized_crop(x[i], top[i].item(), left[i].item(), side[i].item(),
                                       side[i].item(), [32, 32], antialias=True)
                       for i in range(8)])
    assert torch.allclose(ours, ref, atol=1e-6)


def test_color_jitter_equals_torchvision_in_any_order():
    torch.manual_seed(1)
    x = torch.rand(12, 3, 16, 16)
    factors = torch.rand(12, 4) * 0.4 + 0.8
    factors[:, 3] -= 1.0  # hue shifts in [-0.2, 0.2]
    order = torch.rand(12, 4).argsort(1)
    fns = [TF.adjust_brightness, TF.adjust_contrast, TF.adjust_saturation, TF.adjust_hue]
    ref = []
    for i in range(12):
        img = x[i]
        for k in order[i].tolist():
            img = fns[k](img, factors[i, k].item())
        ref.append(img)
    assert torch.allclose(color_jitter(x, factors, order), torch.stack(ref), atol=1e-5)
    shift = torch.linspace(-0.5, 0.5, 12)
    ref = torch.stack([TF.adjust_hue(x[i], shift[i].item()) for i in range(12)])
    assert torch.allclose(adjust_hue(x, shift), ref, atol=1e-5)


def test_augment_draws_from_the_assignments_ranges():
    """Crops, jitter factors and flips come from the ranges of the assignment's transforms."""
    strengths = (0.08, 0.05, 0.12, 0.03)
    n = 20000
    p = Augment(strengths, flip=True).sample(n, torch.Generator().manual_seed(0))
    # torchvision's RandomResizedCrop(32, scale=(0.7, 1.0), ratio=(1, 1)) draws, for reference
    crop = T.RandomResizedCrop(32, scale=(0.7, 1.0), ratio=(1.0, 1.0))
    torch.manual_seed(0)
    ref = [crop.make_params([torch.zeros(3, 32, 32)]) for _ in range(3000)]
    ref_sides = torch.tensor([r["height"] for r in ref])
    assert set(p.size.unique().tolist()) == set(ref_sides.unique().tolist()) == set(range(27, 33))
    assert (p.top >= 0).all() and (p.top + p.size <= 32).all()
    assert (p.left >= 0).all() and (p.left + p.size <= 32).all()
    # same side distribution (within sampling noise) as torchvision's
    ours_hist = torch.bincount(p.size, minlength=33)[27:].float() / n
    ref_hist = torch.bincount(ref_sides, minlength=33)[27:].float() / len(ref)
    assert (ours_hist - ref_hist).abs().max() < 0.04
    # ColorJitter(b, c, s, h): factors uniform in [1-b, 1+b] ... and hue in [-h, h]
    b, c, s, h = strengths
    lo = torch.tensor([1 - b, 1 - c, 1 - s, -h])
    hi = torch.tensor([1 + b, 1 + c, 1 + s, h])
    assert (p.factors >= lo).all() and (p.factors <= hi).all()
    assert ((p.factors.min(0).values - lo) < 0.01).all()  # and the whole range is used
    assert ((hi - p.factors.max(0).values) < 0.01).all()
    assert (p.order.sort(1).values == torch.arange(4)).all()  # each row a permutation
    assert abs(p.flip.float().mean().item() - 0.5) < 0.02
    assert not Augment(strengths, flip=False).sample(100, torch.Generator()).flip.any()


def test_jitter_strengths_follow_the_assignments_torchvision():
    """0.1*randn(1) per jitter; torchvision 0.2 applied a jitter only for a strength > 0, so
    a negative draw is 0 (off) and each jitter is on in about half of all runs."""
    a, b = jitter_strengths(0), jitter_strengths(1)
    assert a == jitter_strengths(0) and a != b
    draws = (0.1 * torch.randn(4, generator=make_generator("cpu", 0, "color_jitter")))
    assert a == pytest.approx([max(0.0, v) for v in draws.tolist()])
    runs = torch.tensor([jitter_strengths(seed) for seed in range(400)])  # (400, 4)
    on = (runs > 0).float().mean(0)
    assert ((on > 0.4) & (on < 0.6)).all(), on
    assert (runs >= 0).all() and runs.max() < 0.5
    assert abs(runs[runs > 0].mean().item() - 0.1 * (2 / torch.pi) ** 0.5) < 0.01  # E|0.1 N|


def test_a_jitter_that_is_off_leaves_the_image_exactly_alone():
    x = torch.rand(6, 3, 32, 32)
    g = torch.Generator().manual_seed(0)
    aug = Augment((0.0, 0.0, 0.0, 0.0), flip=False)
    p = aug.sample(6, g)
    cropped = resized_crop(x, p.top, p.left, p.size, 32)
    assert torch.equal(aug.apply(x, p), cropped)  # no colour change at all, not even rounding
    # brightness alone: the other three are skipped, whatever the drawn order
    only_b = Augment((0.2, 0.0, 0.0, 0.0), flip=False)
    p = only_b.sample(6, g)
    expected = (resized_crop(x, p.top, p.left, p.size, 32) * p.factors[:, 0, None, None, None])
    assert torch.allclose(only_b.apply(x, p), expected.clamp(0, 1), atol=1e-6)


def test_augment_keeps_range_and_changes_images():
    x = torch.rand(16, 3, 32, 32)
    y = Augment((0.1, 0.1, 0.1, 0.05))(x, torch.Generator().manual_seed(0))
    assert y.shape == x.shape and y.min() >= 0 and y.max() <= 1
    assert not torch.allclose(x, y)


def _toy(n=40):
    x = torch.arange(n, dtype=torch.uint8)[:, None, None, None].expand(n, 3, 32, 32).contiguous()
    return x, torch.arange(n) % 10


def test_batches_shuffle_drop_last_and_rebuild_any_batch():
    x, y = _toy(40)
    b = Batches(x, y, 16, "cpu", seed=3, shuffle=True, drop_last=True,
                augment=Augment((0.1, 0.1, 0.1, 0.1)))
    assert len(b) == 2
    first = list(b.epoch(0))
    assert all(xb.shape == (16, 3, 32, 32) for xb, _ in first)
    assert all(xb.min() >= -1 and xb.max() <= 1 for xb, _ in first)
    again = list(b.epoch(0))
    assert all(torch.equal(a[0], c[0]) and torch.equal(a[1], c[1]) for a, c in zip(first, again))
    # a run resumed at batch 1 sees exactly the batch an uninterrupted run sees
    tail = list(b.epoch(0, start=1))
    assert len(tail) == 1 and torch.equal(tail[0][0], first[1][0])
    assert not torch.equal(list(b.epoch(1))[0][1], first[0][1])  # new order each epoch
    plain = Batches(x, y, 16, "cpu")
    assert len(plain) == 3 and torch.equal(torch.cat([yb for _, yb in plain.epoch(0)]), y)
    assert torch.allclose(next(plain.epoch(0))[0][1], torch.full((3, 32, 32), 1 / 127.5 - 1))


def test_batches_split_between_ranks():
    x, y = _toy(40)
    seen = [torch.cat([yb for _, yb in Batches(x, torch.arange(40), 5, "cpu", shuffle=True,
                                                 rank=r, world_size=2).epoch(0)])
            for r in range(2)]
    assert len(seen[0]) == len(seen[1]) == 20
    assert sorted(torch.cat(seen).tolist()) == list(range(40))


def test_digits_dataset():
    d = load_dataset("digits", "unused")
    assert d.train_x.shape == (1500, 3, 32, 32) and d.test_x.shape == (297, 3, 32, 32)
    assert d.train_x.dtype == torch.uint8 and d.num_classes == 10 and not d.flip
    assert torch.equal(d.train_y, load_dataset("digits", "unused").train_y)
    assert set(d.train_y.tolist()) == set(range(10))
    s = load_dataset("digits", "unused", subset=100, seed=1)
    assert s.train_x.shape[0] == 100
    with pytest.raises(DataError, match="larger"):
        load_dataset("digits", "unused", subset=5000)


def test_digits_are_cached_and_read_back_equal(tmp_path, monkeypatch):
    """The second load reads the cache, without scikit-learn (about a second to import); a
    damaged cache is rebuilt."""
    import utils.extras

    cache = tmp_path / "cache"
    fresh = load_dataset("digits", "unused", str(cache))
    (name,) = os.listdir(cache)
    real = utils.extras.require
    monkeypatch.setattr(utils.extras, "require", lambda *a: pytest.fail("scikit-learn again"))
    cached = load_dataset("digits", "unused", str(cache))
    for k in ("train_x", "train_y", "test_x", "test_y"):
        assert torch.equal(getattr(cached, k), getattr(fresh, k)), k
    assert (cached.name, cached.classes, cached.flip) == ("digits", fresh.classes, False)
    monkeypatch.setattr(utils.extras, "require", real)
    CACHE_DAMAGE["truncated"](str(cache / name))
    assert torch.equal(load_dataset("digits", "unused", str(cache)).test_x, fresh.test_x)


def _write_folder(root, classes=("cat", "dog"), per_class=3, size=32):
    rng = np.random.default_rng(0)
    for split in ("train", "test"):
        for c in classes:
            os.makedirs(os.path.join(root, split, c), exist_ok=True)
            for i in range(per_class):
                arr = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
                Image.fromarray(arr).save(os.path.join(root, split, c, f"{i}.png"))


def test_image_folder_labels_by_folder_and_caches(tmp_path, monkeypatch):
    root, cache = str(tmp_path / "imgs"), str(tmp_path / "cache")
    _write_folder(root)
    d = load_folder(root, cache)
    assert d.classes == ("cat", "dog")
    assert d.train_x.shape == (6, 3, 32, 32) and d.train_y.tolist() == [0, 0, 0, 1, 1, 1]
    expected = np.asarray(Image.open(os.path.join(root, "train", "dog", "1.png")))
    assert np.array_equal(d.train_x[4].permute(1, 2, 0).numpy(), expected)
    assert len(os.listdir(cache)) == 1
    # the second load reads the cache, decoding nothing, and gives identical arrays
    from utils import images
    monkeypatch.setattr(images, "decode_split", lambda *a, **k: pytest.fail("decoded again"))
    d2 = load_folder(root, cache)
    for k in ("train_x", "train_y", "test_x", "test_y"):
        assert torch.equal(getattr(d, k), getattr(d2, k))
    assert d2.classes == d.classes


def test_image_folder_errors(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        load_dataset("folder", str(tmp_path / "nope"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="empty"):
        load_dataset("folder", str(tmp_path / "empty"))
    _write_folder(str(tmp_path / "big"), size=40)
    with pytest.raises(DataError, match="32x32"):
        load_folder(str(tmp_path / "big"), str(tmp_path / "c"))
    with pytest.raises(DataError, match="unknown dataset"):
        load_dataset("imagenet", str(tmp_path))


def test_cifar10_without_network_says_where_to_point(tmp_path, monkeypatch):
    import torchvision

    def offline(*a, **k):
        raise URLError("no network")

    monkeypatch.setattr(torchvision.datasets, "CIFAR10", offline)
    with pytest.raises(DataError, match="--data_dir"):
        load_dataset("cifar10", str(tmp_path))


@pytest.mark.slow
def test_cifar10_from_png_copy(cifar_dir, cache_dir):
    d = load_dataset("cifar10", cifar_dir, cache_dir)
    assert d.train_x.shape == (50000, 3, 32, 32) and d.test_x.shape == (10000, 3, 32, 32)
    assert torch.bincount(d.test_y).tolist() == [1000] * 10
    mean = d.test_x.float().mean(dim=(0, 2, 3)) / 255  # the published test-set means
    assert torch.allclose(mean, torch.tensor([0.4942, 0.4851, 0.4504]), atol=2e-3)


def _write_svhn(folder, n_train=30, n_test=12):
    """Small .mat files in SVHN's format: X (32, 32, 3, N) uint8, y (N, 1) in 1..10."""
    import scipy.io

    rng = np.random.default_rng(0)
    arrays = {}
    for split, n in (("train", n_train), ("test", n_test)):
        x = rng.integers(0, 256, (32, 32, 3, n), dtype=np.uint8)
        y = (np.arange(n) % 10 + 1).reshape(n, 1).astype(np.uint8)  # 10 is the digit 0
        scipy.io.savemat(os.path.join(folder, f"{split}_32x32.mat"), {"X": x, "y": y})
        arrays[split] = (x, y)
    return arrays


def test_svhn_from_mat_files(tmp_path):
    arrays = _write_svhn(str(tmp_path))
    d = load_dataset("svhn", str(tmp_path))
    assert d.train_x.shape == (30, 3, 32, 32) and d.test_x.shape == (12, 3, 32, 32)
    assert d.train_x.dtype == torch.uint8 and d.channels == 3 and d.image_size == 32
    x, y = arrays["train"]
    # image 7, channel 2, row 5, column 9 is X[5, 9, 2, 7]
    assert d.train_x[7, 2, 5, 9].item() == x[5, 9, 2, 7]
    assert d.train_y.tolist() == [(v % 10) for v in y[:, 0].tolist()]  # 10 -> 0
    assert d.classes == tuple(str(i) for i in range(10)) and not d.flip
    (tmp_path / "test_32x32.mat").write_bytes(b"not a mat file")
    with pytest.raises(DataError, match="test_32x32.mat"):
        load_dataset("svhn", str(tmp_path))


def test_svhn_without_files_or_network_says_where_to_point(tmp_path, monkeypatch):
    import torchvision

    def offline(*a, **k):
        raise URLError("no network")

    monkeypatch.setattr(torchvision.datasets, "SVHN", offline)
    with pytest.raises(DataError, match="--data_dir"):
        load_dataset("svhn", str(tmp_path))


def test_mnist_and_fashion_mnist_from_torchvisions_files(mnist_dir):
    for name, first_labels in (("mnist", [5, 0, 4, 1, 9]), ("fashion_mnist", [9, 0, 0, 3, 0])):
        d = load_dataset(name, mnist_dir)
        assert d.train_x.shape == (60000, 1, 28, 28) and d.test_x.shape == (10000, 1, 28, 28)
        assert d.train_x.dtype == torch.uint8 and d.channels == 1 and d.image_size == 28
        assert d.train_y[:5].tolist() == first_labels  # the published first labels
        assert d.num_classes == 10
    assert not load_dataset("mnist", mnist_dir).flip  # a flipped digit is another shape


def test_grey_images_get_brightness_and_contrast_only():
    """torchvision's saturation and hue leave a one-channel image alone; so does ours, and
    brightness and contrast act on it as on any image."""
    x = torch.rand(4, 1, 28, 28)
    factors = torch.tensor([[1.2, 0.8, 1.5, 0.3]] * 4)
    order = torch.tensor([[3, 2, 1, 0]] * 4)
    ours = color_jitter(x, factors, order)
    ref = torch.stack([TF.adjust_brightness(TF.adjust_contrast(TF.adjust_saturation(
        TF.adjust_hue(x[i], 0.3), 1.5), 0.8), 1.2) for i in range(4)])
    assert torch.allclose(ours, ref, atol=1e-6)
    crop = Augment((0.1, 0.1, 0.1, 0.1), flip=False, size=28)
    out = crop(x, torch.Generator().manual_seed(0))
    assert out.shape == (4, 1, 28, 28) and out.min() >= 0 and out.max() <= 1


# ------------------------------------------------------------------------- the decoded image cache

CACHE_DAMAGE = {
    "random bytes": lambda p: open(p, "wb").write(os.urandom(300)),
    "truncated": lambda p: open(p, "r+b").truncate(os.path.getsize(p) // 2),
    "empty": lambda p: open(p, "wb").close(),
    "arrays missing": lambda p: np.savez(p[:-4], train_x=np.zeros(3)),
    "wrong dtype": lambda p: np.savez(p[:-4], train_x=np.zeros((2, 3, 32, 32)),
                                      train_y=np.zeros(2), test_x=np.zeros((1, 3, 32, 32)),
                                      test_y=np.zeros(1), classes=np.array(["a"])),
}


@pytest.mark.parametrize("damage", list(CACHE_DAMAGE))
def test_a_damaged_decoded_image_cache_is_rebuilt(damage, folder, tmp_path):
    cache = str(tmp_path / "cache")
    first = load_folder(folder, cache)
    (name,) = os.listdir(cache)
    CACHE_DAMAGE[damage](os.path.join(cache, name))
    again = load_folder(folder, cache)
    assert torch.equal(again.train_x, first.train_x) and again.classes == first.classes
    assert torch.equal(load_folder(folder, cache).test_x, first.test_x)  # and cached again


def test_a_link_to_the_folder_shares_its_cache(folder, tmp_path, monkeypatch):
    cache = str(tmp_path / "cache")
    load_folder(folder, cache)
    os.symlink(folder, tmp_path / "link")
    from utils import images
    monkeypatch.setattr(images, "decode_split", lambda *a, **k: pytest.fail("decoded again"))
    load_folder(str(tmp_path / "link"), cache)


# ----------------------------------------------------------------------------- messages

def test_data_messages_say_what_is_wrong(mnist_dir, tmp_path):
    d = tmp_path / "m"
    (d / "MNIST" / "raw").mkdir(parents=True)
    for f in os.listdir(os.path.join(mnist_dir, "MNIST", "raw")):
        os.symlink(os.path.join(mnist_dir, "MNIST", "raw", f), d / "MNIST" / "raw" / f)
    target = d / "MNIST" / "raw" / "train-images-idx3-ubyte"
    target.unlink()
    target.write_bytes(open(os.path.join(mnist_dir, "MNIST", "raw", target.name), "rb")
                       .read(1000))  # truncated
    with pytest.raises(DataError, match="damaged or incomplete"):
        load_dataset("mnist", str(d))
    (tmp_path / "a_file").write_text("x")
    for name in ("mnist", "folder", "cifar10"):
        with pytest.raises(DataError, match="is a file, not a folder"):
            load_dataset(name, str(tmp_path / "a_file"))


def test_download_only_fetches_and_trains_nothing(tmp_path, capsys):
    code, out, err = run_cli(train_gan.main, ["--dataset", "digits", "--download_only",
                                              "--out_dir", str(tmp_path / "run")], capsys)
    assert code == 0, err
    assert json.loads(out.splitlines()[-1])["train"] == 1500 and "nothing trained" in err
    assert not (tmp_path / "run").exists()
