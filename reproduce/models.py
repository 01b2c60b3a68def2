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


ACTIVATIONS = ("quadratic", "relu")


class _OneHotRows(torch.autograd.Function):
    """The first layer's product with the two one-hot vectors of (a, b), as a row lookup: row a plus
    row P + b of each replica's w_in. The sum is the dense product's to the bit (the other 2P - 2 terms
    are exact zeros); the backward adds each sample's gradient into its two rows (`index_add_`), a
    P-fold smaller sum than the dense product's, in another order (equal up to rounding)."""

    @staticmethod
    def forward(ctx, w_in: torch.Tensor, rows_a: torch.Tensor, rows_b: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(rows_a, rows_b)
        ctx.shape = w_in.shape
        flat = w_in.reshape(-1, w_in.shape[-1])
        out = flat.index_select(0, rows_a) + flat.index_select(0, rows_b)
        return out.view(w_in.shape[0], -1, w_in.shape[-1])

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        rows_a, rows_b = ctx.saved_tensors
        r, two_p, m = ctx.shape
        flat = grad.reshape(-1, m)
        out = torch.zeros(r * two_p, m, dtype=grad.dtype, device=grad.device)
        out.index_add_(0, rows_a, flat).index_add_(0, rows_b, flat)
        return out.view(r, two_p, m), None, None


def one_hot_lookup(w_in: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """x @ w_in per replica for x of one-hot pairs (R, B, 2P) or (B, 2P), by row lookup (`_OneHotRows`).

    x may also be the pairs' rows themselves, integers (R, B, 2) or (B, 2): (a, P + b) (`pair_rows`),
    the same lookup without gathering and searching 2P floats per sample (the modnoise small runs'
    training batches: 7% of a step)."""
    r, two_p, _ = w_in.shape
    if x.dim() == 2:
        x = x.unsqueeze(0).expand(r, -1, -1)
    half = two_p // 2
    base = (torch.arange(r, device=x.device) * two_p).unsqueeze(1)
    if not x.is_floating_point():
        return _OneHotRows.apply(w_in, (x[..., 0] + base).reshape(-1), (x[..., 1] + base).reshape(-1))
    rows_a = (x[..., :half].argmax(-1) + base).reshape(-1)
    rows_b = (x[..., half:].argmax(-1) + half + base).reshape(-1)
    return _OneHotRows.apply(w_in, rows_a, rows_b)


def pair_rows(pairs: torch.Tensor, p: int) -> torch.Tensor:
    """The rows of w_in that the one-hot input of each pair (a, b) (N, 2) selects: (a, P + b), (N, 2)."""
    return torch.stack([pairs[:, 0], pairs[:, 1] + p], 1)


def add_output_bias(logits: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """logits (R, N, K) plus the output bias μ, (R, 1, K) or (R, K); None: no bias."""
    return logits if bias is None else logits + bias.reshape(bias.shape[0], 1, -1)


def two_layer_logits(w_in: torch.Tensor, w_out: torch.Tensor, x: torch.Tensor, activation: str = "quadratic",
                     return_hidden: bool = False, lookup: bool = False, bias: torch.Tensor | None = None):
    """The two-layer network of the modular-arithmetic paper on stacked weights: W φ(U e_a + V e_b) + μ.

    w_in: (R, 2P, M), rows 0..P-1 read operand a, rows P..2P-1 operand b; w_out: (R, M, K);
    bias: the output bias μ, (R, 1, K) or (R, K), added to the logits (None: no bias, Gromov's network);
    x: (R, B, 2P) or (B, 2P), the two one-hot vectors of (a, b) concatenated. A dense batched
    product (not a row lookup): on the CPU, BLAS beats gather/scatter at these sizes.
    `lookup`: the first layer as a row lookup (`one_hot_lookup`): the same forward to the bit, a
    cheaper backward whose sums differ from the dense one's by rounding (the paper's setting at small
    trains with it; quick keeps the dense product, so its recorded numbers stay as they were).
    Returns logits (R, B, K), and with `return_hidden` also the activated hidden layer (R, B, M).
    """
    if lookup:
        pre = one_hot_lookup(w_in, x)
    else:
        if x.dim() == 2:
            x = x.unsqueeze(0).expand(w_in.shape[0], -1, -1)
        pre = torch.bmm(x, w_in)
    hidden = pre * pre if activation == "quadratic" else torch.relu(pre)
    logits = add_output_bias(torch.bmm(hidden, w_out), bias)
    return (logits, hidden) if return_hidden else logits


class StackedTwoLayer(nn.Module):
    """R two-layer networks (a ∘ b) mod P -> class, width M: quadratic activation by default, ReLU as
    an option. Without `output_bias`, Gromov's (2023) network, no biases; with it, the label-noise
    paper's f(a, b) = W φ(U e_a + V e_b) + μ, a learned output bias μ per class (`self.bias`,
    (R, 1, K); None without).

    Initialization as `nn.Linear` (uniform ±1/sqrt(fan_in), fan_in 2P and M; μ like nn.Linear's bias,
    ±1/sqrt(M)), per replica seed; μ is drawn after w_in and w_out from the same generator, so the
    weights of a model with and without μ are equal to the bit. The optimizer (step.make_optimizer)
    decays every parameter, μ included, as torch's AdamW does by default: the paper names no exception.
    """

    def __init__(self, p: int, width: int, num_classes: int, seeds: Sequence[int], activation: str = "quadratic",
                 lookup: bool = False, output_bias: bool = False):
        super().__init__()
        self.lookup = lookup  # the first layer as a row lookup (two_layer_logits); not a parameter: states resume either way
        if activation not in ACTIVATIONS:
            raise ValueError(f"unknown activation {activation!r}: use {' or '.join(ACTIVATIONS)}")
        self.p, self.width, self.num_classes, self.activation = p, width, num_classes, activation
        self.replicas = len(seeds)
        generators = [torch.Generator().manual_seed(int(s)) for s in seeds]
        self.w_in = nn.Parameter(torch.stack([_uniform((2 * p, width), 1 / math.sqrt(2 * p), g) for g in generators]))
        self.w_out = nn.Parameter(torch.stack([_uniform((width, num_classes), 1 / math.sqrt(width), g) for g in generators]))
        if output_bias:  # after the weights: their draws stay those of the bias-free model
            self.bias = nn.Parameter(torch.stack([_uniform((1, num_classes), 1 / math.sqrt(width), g) for g in generators]))
        else:  # no parameter (not in parameters() nor state_dict: a bias-free model's fingerprint is unchanged)
            self.register_parameter("bias", None)

    def forward(self, x: torch.Tensor, return_hidden: bool = False):
        return two_layer_logits(self.w_in, self.w_out, x, self.activation, return_hidden, self.lookup, self.bias)

    def multiply_adds(self) -> int:
        """Multiply-adds of one forward pass of one sample through one replica: the first layer's dense
        product with the one-hot pair (2P x M), none where it is a row lookup (two rows read and added),
        then the output layer (M x P). Counting the dense product for a lookup put the small runs' bench
        at 145-164% of the CPU's FMA peak, three times the work done."""
        return (0 if self.lookup else 2 * self.p * self.width) + self.width * self.num_classes


class StackedConvNet(nn.Module):
    """R copies of the 4-stage ConvNet of Nakkiran et al. (2019), evaluated together.

    Stage i is a 3x3 convolution (padding 1) of width w * 2^i followed by ReLU and a max-pool of
    1, 2, 2 and (global) sizes, then a linear read-out: widths [w, 2w, 4w, 8w], no batch norm. The
    replicas are stacked along channels and run as grouped convolutions (groups = R), so R seeds
    cost one convolution call per stage. Weights are PyTorch's `nn.Conv2d`/`nn.Linear` default
    (uniform in ±1/sqrt(fan_in)), drawn per replica from its own seed; convolution biases start at
    0: with the default uniform biases a negative bias on the single channel of a width-1 stage
    kills it for every (non-negative) input, a constant output from which no optimizer can move
    (2 of the 5 quick w = 1 replicas at base seed 0; docs/smooth.md).
    """

    def __init__(self, input_shape: Sequence[int], width: int, num_classes: int, seeds: Sequence[int]):
        super().__init__()
        self.input_shape = tuple(input_shape)
        self.width = int(width)
        self.replicas = len(seeds)
        channels = [self.input_shape[0], *(self.width * 2**i for i in range(4))]
        generators = [torch.Generator().manual_seed(int(s)) for s in seeds]
        self.weights = nn.ParameterList()
        self.biases = nn.ParameterList()
        for c_in, c_out in zip(channels[:-1], channels[1:]):
            bound = 1.0 / math.sqrt(c_in * 9)
            self.weights.append(nn.Parameter(torch.cat([_uniform((c_out, c_in, 3, 3), bound, g) for g in generators])))
            self.biases.append(nn.Parameter(torch.zeros(len(generators) * c_out)))
        bound = 1.0 / math.sqrt(channels[-1])
        self.head_weight = nn.Parameter(torch.stack([_uniform((channels[-1], num_classes), bound, g) for g in generators]))
        self.head_bias = nn.Parameter(torch.stack([_uniform((1, num_classes), bound, g) for g in generators]))
        self.channels = channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (R, B, C, H, W) per replica, or (B, C, H, W) shared by all replicas -> logits (R, B, K)."""
        r = self.replicas
        if x.dim() == 4:
            x = x.unsqueeze(0).expand(r, *x.shape)
        if x.dim() != 5 or tuple(x.shape[2:]) != self.input_shape or x.shape[0] != r:
            raise ValueError(f"input of shape {tuple(x.shape)} is not ({r}, B, *{self.input_shape})")
        b = x.shape[1]
        h = x.transpose(0, 1).reshape(b, r * self.input_shape[0], *self.input_shape[1:])
        for i, (w, bias) in enumerate(zip(self.weights, self.biases)):
            h = torch.relu(torch.nn.functional.conv2d(h, w, bias, padding=1, groups=r))
            if i in (1, 2):
                h = torch.nn.functional.max_pool2d(h, 2)
        h = h.amax(dim=(2, 3)).view(b, r, -1).transpose(0, 1)  # global max-pool: (R, B, 8w)
        return torch.baddbmm(self.head_bias, h, self.head_weight)

    def multiply_adds(self) -> int:
        """Multiply-adds of one forward pass of one sample through one replica."""
        _, hh, ww = self.input_shape
        total, sizes = 0, [(hh, ww), (hh, ww), (hh // 2, ww // 2), (hh // 4, ww // 4)]
        for (c_in, c_out), (a, b) in zip(zip(self.channels[:-1], self.channels[1:]), sizes):
            total += a * b * c_in * c_out * 9
        return total + self.channels[-1] * self.head_weight.shape[-1]


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
