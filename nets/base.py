"""What every family's networks share: the discriminator's base (Critic), LayerNorm in fp32,
CS231n's initialisation and the crop of a generator's larger output."""
import torch.nn as nn


class FloatLayerNorm(nn.LayerNorm):
    """LayerNorm in fp32 under autocast on any device, as CUDA's autocast does by itself (in
    bf16 on the CPU it moved the gradient penalty)."""

    def forward(self, x):
        return super().forward(x.float())


def _conv_out(size, kernel, stride, padding):
    return (size + 2 * padding - kernel) // stride + 1


def xavier_init(module):
    """CS231n's initialize_weights (seed 004), which its notebook gives its DCGAN alone:
    Xavier-uniform linear and transposed-convolution weights, PyTorch's default elsewhere."""
    for m in module.modules():
        if isinstance(m, (nn.Linear, nn.ConvTranspose2d)):
            nn.init.xavier_uniform_(m.weight)


def center_crop(x, size):
    """(B, C, S, S) -> (B, C, size, size), the centre; nothing to do when S == size."""
    offset = (x.shape[-1] - size) // 2
    return x if offset == 0 else x[..., offset:offset + size, offset:offset + size]


class Critic(nn.Module):
    """What every discriminator shares: `blocks` run in order, trunk() turns the last block's
    output into the feature vector the heads read, `fc1` scores it and `fc10` (when
    num_classes > 0) classifies it."""
    family = role = None  # set by each subclass: its name in ARCHITECTURES, "discriminator"
    batch_statistics = False  # True when a BatchNorm mixes the samples of a batch

    def _heads(self, features, num_classes):
        self.num_classes = num_classes
        self.fc1 = nn.Linear(features, 1)
        self.fc10 = nn.Linear(features, num_classes) if num_classes else None

    @property
    def depth(self):
        """How many blocks features() can read (1..depth)."""
        return len(self.blocks)

    def features(self, x, layer):
        """The output of block `layer` (1..depth), max-pooled over space: (B, channels)."""
        if not 1 <= layer <= self.depth:
            raise ValueError(f"layer must be 1..{self.depth}, got {layer}")
        for block in self.blocks[:layer]:
            x = block(x)
        return x.amax(dim=(2, 3)) if x.dim() == 4 else x  # (B, C, h, w) -> (B, C)

    def trunk(self, h):
        return h.flatten(1)

    def embed(self, x):
        """The representation the heads read: (B, C, S, S) -> (B, features)."""
        for block in self.blocks:
            x = block(x)
        return self.trunk(x)

    def forward(self, x):
        h = self.embed(x)
        return self.fc1(h).squeeze(1), (self.fc10(h) if self.fc10 is not None else None)
