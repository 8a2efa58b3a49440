"""The classifier's training step and the assignment's learning-rate schedule (Part 1 without
the generator: train_baseline.py runs them through the shared epoch loop, bench.py times the
step)."""
import torch.nn.functional as F

from utils.training import descend


def lr_at(epoch, base_lr, epochs):
    """The assignment's schedule (/10 at epoch 50, /100 at 75 of 100), scaled to any length;
    the first epoch always has the full rate (a one-epoch run is not trained at lr/100)."""
    if epoch >= max(1, int(0.75 * epochs)):
        return base_lr / 100
    if epoch >= max(1, int(0.5 * epochs)):
        return base_lr / 10
    return base_lr


def train_step(model, optimizer, x, y, runtime, step_cap=1024):
    """One Adam step of cross-entropy on fc10; returns (loss, correct predictions) as tensors."""
    with runtime.autocast():
        _, logits = model(x)
    loss = F.cross_entropy(logits.float(), y)
    descend(optimizer, loss, step_cap)
    return loss.detach(), (logits.detach().argmax(1) == y).sum()
