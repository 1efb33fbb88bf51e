"""Device-resident task data and batched on-device augmentation (airbench style).

A task's images live on the device as one uint8 tensor (N, C, H, W); each epoch is a
device `randperm`; crop-with-padding, horizontal flip and normalisation are batched tensor
ops. No DataLoader, no PIL, no host sync. Evaluation data is only normalised, unless a
generator is given (the `paper` protocol reproduces the reference's test-time crop and flip).
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch
from torch import Tensor


class TaskData:
    """One task's images and labels on `device`; labels are global class ids."""

    def __init__(self, images: np.ndarray, labels: np.ndarray, device: torch.device, mean: tuple[float, ...],
                 std: tuple[float, ...], crop_padding: int = 0, flip: bool = False, channels_last: bool = False):
        # (N, H, W, C) uint8 on the host -> (N, C, H, W) uint8 on the device, once
        self.x = torch.from_numpy(np.ascontiguousarray(images.transpose(0, 3, 1, 2))).to(device)
        self.y = torch.from_numpy(labels.astype(np.int64)).to(device)
        mean_t = torch.tensor(mean, device=device, dtype=torch.float32).view(1, -1, 1, 1)
        std_t = torch.tensor(std, device=device, dtype=torch.float32).view(1, -1, 1, 1)
        self.scale, self.shift = 1.0 / (255.0 * std_t), -mean_t / std_t  # x/255 - mean) / std, fused
        self.crop_padding, self.flip, self.channels_last = crop_padding, flip, channels_last

    def __len__(self) -> int:
        return self.x.shape[0]

    def normalise(self, x: Tensor) -> Tensor:
        x = torch.addcmul(self.shift, x.float(), self.scale)  # (B, C, H, W) float32
        return x.contiguous(memory_format=torch.channels_last) if self.channels_last else x

    def augment(self, x: Tensor, generator: torch.Generator) -> Tensor:
        """Random crop with padding and horizontal flip, as the benchmark asks; (B, C, H, W) uint8."""
        if self.crop_padding:
            x = random_crop(x, self.crop_padding, generator)
        if self.flip:
            x = random_flip(x, generator)
        return x

    def train_batches(self, batch_size: int, generator: torch.Generator) -> Iterator[tuple[Tensor, Tensor]]:
        """One epoch of augmented batches in a random order (the last batch may be short)."""
        order = torch.randperm(len(self), device=self.x.device, generator=generator)
        for start, end in batch_bounds(len(self), batch_size):
            idx = order[start:end]
            yield self.normalise(self.augment(self.x[idx], generator)), self.y[idx]

    def eval_batches(self, batch_size: int,
                     generator: torch.Generator | None = None) -> Iterator[tuple[Tensor, Tensor]]:
        """Batches in stored order; augmented like training batches only when a generator is given."""
        for start, end in batch_bounds(len(self), batch_size):
            x = self.x[start:end]
            yield self.normalise(x if generator is None else self.augment(x, generator)), self.y[start:end]


def batch_bounds(n: int, batch_size: int) -> list[tuple[int, int]]:
    """(start, end) of each batch; a lone last sample joins the previous batch, because
    BatchNorm with batch statistics cannot normalise a batch of one at a 1x1 feature map."""
    bounds = [(start, min(start + batch_size, n)) for start in range(0, n, batch_size)]
    if len(bounds) > 1 and bounds[-1][1] - bounds[-1][0] == 1:
        bounds[-2:] = [(bounds[-2][0], n)]
    return bounds


def random_crop(x: Tensor, padding: int, generator: torch.Generator) -> Tensor:
    """Per-sample random crop of the zero-padded batch back to (H, W), as one gather."""
    b, c, h, w = x.shape
    padded = torch.nn.functional.pad(x, (padding, padding, padding, padding))  # (B, C, H+2p, W+2p)
    offsets = torch.randint(0, 2 * padding + 1, (2, b), device=x.device, generator=generator)
    rows = (offsets[0, :, None] + torch.arange(h, device=x.device))[:, None, :, None]  # (B, 1, H, 1)
    cols = (offsets[1, :, None] + torch.arange(w, device=x.device))[:, None, None, :]  # (B, 1, 1, W)
    batch = torch.arange(b, device=x.device)[:, None, None, None]
    channel = torch.arange(c, device=x.device)[None, :, None, None]
    return padded[batch, channel, rows, cols]  # (B, C, H, W)


def random_flip(x: Tensor, generator: torch.Generator) -> Tensor:
    flip = torch.rand(x.shape[0], device=x.device, generator=generator) < 0.5
    return torch.where(flip[:, None, None, None], x.flip(3), x)
