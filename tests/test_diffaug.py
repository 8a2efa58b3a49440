"""DiffAugment (utils/diffaug.py): differentiable, each transform what it says, and the same
for an image alone as in its batch."""
import pytest
import torch

from utils.diffaug import DiffAugment, parse_policy


def test_diffaugment_is_differentiable_and_the_same_per_sample_or_batched():
    assert parse_policy("cutout,color") == ("color", "cutout")
    with pytest.raises(ValueError, match="unknown"):
        parse_policy("colour")
    aug = DiffAugment("color,translation,cutout")
    x = (torch.rand(6, 3, 32, 32) * 2 - 1).requires_grad_(True)
    g = torch.Generator().manual_seed(0)
    p = aug.sample(6, 32, 32, g)
    out = aug.apply(x, p)
    out.square().sum().backward()  # the generator's gradient flows through every transform
    assert x.grad is not None and torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0
    for i in range(6):  # image i alone with its own draws: what the batch gave it
        one = aug.apply(x[i:i + 1].detach(), {k: v[i:i + 1] for k, v in p.items()})
        assert torch.allclose(one, out[i:i + 1].detach(), atol=1e-6)
    # each transform does what it says
    img = torch.arange(16.).view(1, 1, 4, 4)
    shifted = DiffAugment("translation").apply(img, {"shift_y": torch.tensor([1]),
                                                     "shift_x": torch.tensor([0])})
    assert torch.equal(shifted[0, 0, 1:], img[0, 0, :3]) and (shifted[0, 0, 0] == 0).all()
    cut = DiffAugment("cutout").apply(torch.ones(1, 1, 32, 32), {"cut_y": torch.tensor([16]),
                                                                  "cut_x": torch.tensor([16])})
    assert (cut == 0).sum() == 16 * 16 and cut[0, 0, 16, 16] == 0 and cut[0, 0, 0, 0] == 1
    assert DiffAugment("off")(x, g) is x
