"""What reaches a training step, without the real data: labels stay with their images through
the shuffle, and the training augmentation's horizontal flip reaches the batches, about half
of them, only where the dataset allows flips (not digits) and only in training batches."""
import pytest
import torch

from utils.data import ImageData
from utils.runtime import Runtime
from utils.settings import DataSettings
from utils.training import make_loaders

N, S = 200, 8


def coded(flip):
    """N images whose label i % 10 is written in every pixel's brightness, with the left half
    dark and the right half bright (so a mirror image is told from the original)."""
    y = torch.arange(N) % 10
    x = (20 * y + 20)[:, None, None, None].expand(N, 3, S, S).clone().to(torch.uint8)
    x[..., S // 2:] += 30  # (N, 3, S, S): the right half 30 levels brighter
    return ImageData("coded", x, y, x[:50], y[:50], tuple("abcdefghij"), flip)


def batches(flip_allowed, augment, shuffle="on"):
    options = DataSettings(batch_size=20, augment=augment, color_jitter="off", shuffle=shuffle)
    return make_loaders(options, 0, coded(flip_allowed), Runtime(torch.device("cpu")))


def decode(x):
    """(label, mirrored) of each image of a batch in [-1, 1]."""
    levels = (x + 1) * 127.5  # back to 0..255
    left, right = levels[:, 0, :, : S // 2].mean((1, 2)), levels[:, 0, :, S // 2:].mean((1, 2))
    dark = torch.minimum(left, right)
    return ((dark - 20) / 20).round().long(), left > right


@pytest.mark.parametrize("augment", ["none", "flip"])
def test_labels_stay_with_their_images_through_the_shuffle(augment):
    train, test = batches(True, augment)
    for epoch in (0, 1):
        seen = []
        for x, y in train.epoch(epoch):
            label, _ = decode(x)
            assert torch.equal(label, y), epoch
            seen.append(y)
        order = torch.cat(seen)
        assert len(order) == N and sorted(order.tolist()) == sorted((torch.arange(N) % 10).tolist())
        assert not torch.equal(order, torch.arange(N) % 10)  # shuffled
    firsts = [next(iter(train.epoch(e)))[1] for e in (0, 1)]
    assert not torch.equal(*firsts)  # a new order every epoch
    unshuffled, _ = batches(True, "none", shuffle="off")
    assert torch.equal(next(iter(unshuffled.epoch(3)))[1], torch.arange(20) % 10)


@pytest.mark.parametrize("augment", ["flip", "assignment"])
def test_the_flip_reaches_the_batches_only_where_the_dataset_allows_it(augment):
    train, test = batches(True, augment)
    mirrored = torch.cat([decode(x)[1] for x, _ in train.epoch(0)])
    assert 0.3 < mirrored.float().mean() < 0.7  # RandomHorizontalFlip: p = 0.5
    assert not any(decode(x)[1].any() for x, _ in test.epoch(0))  # never the test images
    no_flip, _ = batches(False, augment)  # digits: a mirrored 3 is not a 3
    assert not any(decode(x)[1].any() for x, _ in no_flip.epoch(0))
    plain, _ = batches(True, "none")
    assert not any(decode(x)[1].any() for x, _ in plain.epoch(0))
