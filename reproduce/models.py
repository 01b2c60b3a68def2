"""Models that train many replicas (seeds, noise levels) as one batched module.

A replica is an independent network: its own initialization, its own data order and labels.
Stacking R replicas of one architecture turns R small matrix products into one batched product
(`torch.baddbmm`), which is where the engine's speed on small models comes from. Every optimizer
the papers use (Adam, AdamW, SGD with momentum) is elementwise, so stacked training equals
training the replicas one after another.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn


def _uniform(shape: tuple[int, ...], bound: float, generator: torch.Generator) -> torch.Tensor:
    return (torch.rand(shape, generator=generator) * 2 - 1) * bound


class StackedMLP(nn.Module):
    """R fully connected ReLU networks of the same widths, evaluated together.

    Initialization is PyTorch's `nn.Linear` default (uniform in ±1/sqrt(fan_in) for weights and
    biases), drawn per replica from its own seed so that a replica does not depend on which
    other replicas it is stacked with.
    """

    def __init__(self, input_shape: Sequence[int], hidden: Sequence[int], num_classes: int, seeds: Sequence[int]):
        super().__init__()
        self.input_shape = tuple(input_shape)
        self.widths = [math.prod(self.input_shape), *hidden, num_classes]
        self.replicas = len(seeds)
        self.weights = nn.ParameterList()
        self.biases = nn.ParameterList()
        generators = [torch.Generator().manual_seed(int(s)) for s in seeds]
        for fan_in, fan_out in zip(self.widths[:-1], self.widths[1:]):
            bound = 1.0 / math.sqrt(fan_in)
            w = torch.stack([_uniform((fan_in, fan_out), bound, g) for g in generators])
            b = torch.stack([_uniform((1, fan_out), bound, g) for g in generators])
            self.weights.append(nn.Parameter(w))
            self.biases.append(nn.Parameter(b))

    @property
    def hidden_layers(self) -> int:
        return len(self.widths) - 2

    def forward(self, x: torch.Tensor, return_hidden: bool = False):
        """x: (R, B, *input_shape), or (B, *input_shape) shared by all replicas.

        Returns logits (R, B, K), and with `return_hidden` also the post-ReLU output of every
        hidden layer, each (R, B, width): the "signals at layer l" of the double-descent paper.
        """
        h = self._flatten(x)
        hidden = []
        last = len(self.weights) - 1
        for i, (w, b) in enumerate(zip(self.weights, self.biases)):
            h = torch.baddbmm(b, h, w) if h.dim() == 3 else torch.matmul(h, w) + b
            if i < last:
                h = torch.relu(h)
                if return_hidden:
                    hidden.append(h)
        return (h, hidden) if return_hidden else h

    def _flatten(self, x: torch.Tensor) -> torch.Tensor:
        """(R, B, *input_shape) per replica, or (B, *input_shape) shared by all replicas."""
        batch_dims = x.dim() - len(self.input_shape)
        if batch_dims not in (1, 2) or tuple(x.shape[batch_dims:]) != self.input_shape:
            raise ValueError(f"input of shape {tuple(x.shape)} does not end in {self.input_shape}")
        return x.reshape(*x.shape[:batch_dims], self.widths[0])

    def multiply_adds(self) -> int:
        """Multiply-adds of one forward pass of one sample through one replica."""
        return sum(a * b for a, b in zip(self.widths[:-1], self.widths[1:]))


class StackedCNN(nn.Module):
    """R small convolutional ReLU networks evaluated together: convolutions grouped by replica.

    The R replicas' channels sit side by side in one tensor (B, R*C, H, W) and every convolution
    uses `groups=R`, so replica r only ever sees its own channels: one grouped convolution instead
    of R small ones. After the last convolution the output is flattened per replica (the paper's
    "Flat" layer, no activation of its own) and fed to a StackedMLP head.

    `convs` lists (out_channels, kernel, padding, max-pool 2x2 after it). Initialization is PyTorch's
    `nn.Conv2d` default (uniform in ±1/sqrt(fan_in)), per replica from its own seed.
    """

    def __init__(self, input_shape: Sequence[int], convs: Sequence[tuple[int, int, int, bool]], hidden: Sequence[int],
                 num_classes: int, seeds: Sequence[int]):
        super().__init__()
        self.input_shape = tuple(input_shape)
        self.replicas = len(seeds)
        self.convs = [tuple(c) for c in convs]
        generators = [torch.Generator().manual_seed(int(s)) for s in seeds]
        self.conv_weights = nn.ParameterList()
        self.conv_biases = nn.ParameterList()
        channels, height, width = self.input_shape
        self._conv_macs = 0
        for out, kernel, padding, pool in self.convs:
            bound = 1.0 / math.sqrt(channels * kernel * kernel)
            self.conv_weights.append(nn.Parameter(torch.cat(
                [_uniform((out, channels, kernel, kernel), bound, g) for g in generators])))
            self.conv_biases.append(nn.Parameter(torch.cat([_uniform((out,), bound, g) for g in generators])))
            height, width = height + 2 * padding - kernel + 1, width + 2 * padding - kernel + 1
            self._conv_macs += out * channels * kernel * kernel * height * width
            if pool:
                height, width = height // 2, width // 2
            channels = out
        if height < 1 or width < 1:
            raise ValueError(f"the convolutions shrink a {self.input_shape} input to nothing")
        self.flat_width = channels * height * width
        self.head = StackedMLP((self.flat_width,), hidden, num_classes, seeds=[int(s) + 1_000_003 for s in seeds])

    @property
    def hidden_layers(self) -> int:
        return 1 + self.head.hidden_layers

    def forward(self, x: torch.Tensor, return_hidden: bool = False):
        """x: (R, B, C, H, W), or (B, C, H, W) shared by all replicas.

        With `return_hidden`, also the Flat output and every hidden FC layer's output, each (R, B, width).
        """
        if x.dim() == len(self.input_shape) + 1:
            x = x.unsqueeze(0).expand(self.replicas, *x.shape)
        if tuple(x.shape[2:]) != self.input_shape or x.shape[0] != self.replicas:
            raise ValueError(f"input of shape {tuple(x.shape)} does not match ({self.replicas}, B, {self.input_shape})")
        r, b = x.shape[:2]
        h = x.transpose(0, 1).reshape(b, r * self.input_shape[0], *self.input_shape[1:])
        for (out, kernel, padding, pool), w, bias in zip(self.convs, self.conv_weights, self.conv_biases):
            h = torch.relu(nn.functional.conv2d(h, w, bias, padding=padding, groups=r))
            if pool:
                h = nn.functional.max_pool2d(h, 2)
        flat = h.reshape(b, r, self.flat_width).transpose(0, 1)
        if not return_hidden:
            return self.head(flat)
        logits, hidden = self.head(flat, return_hidden=True)
        return logits, [flat, *hidden]

    def multiply_adds(self) -> int:
        """Multiply-adds of one forward pass of one sample through one replica."""
        return self._conv_macs + self.head.multiply_adds()
