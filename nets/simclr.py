"""SimCLR's networks (seed 004): the projection head g and the encoder-plus-head."""
import torch.nn as nn


class ProjectionHead(nn.Module):
    """SimCLR's g as seed 004's code: linear without bias, BatchNorm, ReLU, linear."""

    def __init__(self, in_features, hidden=None, out_features=128):
        super().__init__()
        hidden = hidden or in_features
        self.net = nn.Sequential(nn.Linear(in_features, hidden, bias=False),
                                 nn.BatchNorm1d(hidden), nn.ReLU(inplace=True),
                                 nn.Linear(hidden, out_features))

    def forward(self, h):
        return self.net(h)


class SimCLRNet(nn.Module):
    """SimCLR's encoder f (a discriminator's trunk, its heads unused), then the projection head
    g: images (B, C, S, S) -> z (B, out_features)."""

    def __init__(self, encoder, head):
        super().__init__()
        self.encoder, self.head = encoder, head

    def forward(self, x):
        return self.head(self.encoder.embed(x))
