"""Epoch-wise double descent in MLPs: Kubo et al., "Deep Exploration of Epoch-wise Double Descent in Noisy Data" (2025).

One run trains one architecture with two stacked replicas per seed (seeds_per_setting seeds):
- `noisy`: 30% `flip` noise, the paper's setting;
- `control`: the clean-label twin: same initialization, data order and mask, labels left clean,
  the same 30% of samples only *tagged* noisy, so every clean/noisy statistic has a twin where the
  two subsets cannot differ.
The probe records what Section 3-5 of the paper plot: loss and accuracy on the clean subset, the
noisy subset against its noisy and its original labels, and the test set (Fig. 1); the cosine
similarity of clean and noisy mean activations per hidden layer and class (Eq. 1-4, Fig. 3) and
the same for correctly and incorrectly predicted test samples (Fig. 4-5); and the mean absolute
activation of every neuron over the training set (Eq. 5, Fig. 7), and of each layer's largest
neuron on noisy samples per (true class, noisy label) cell (Fig. 8).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field, replace

import numpy as np
import torch
import torch.nn.functional as F
import xarray as xr

from reproduce.data import INPUT_SHAPES, TEST_SIZES, TRAIN_SIZES, ImageData, load_dataset
from reproduce.experiments.shrink import shrinking
from reproduce.engine import TrainSpec, log_schedule, seconds_per_step, train, training_cost
from reproduce.measures.activations import cosine_similarity, group_sums
from reproduce.models import StackedMLP
from reproduce.noise import corrupt_labels
from reproduce.timing import own_batch

PAPER = "ddmlp"
SETTINGS = ("noisy", "control")
SPLITS = ("clean", "noisy", "noisy_original", "test")
TEST_PAIRS = ("correct_vs_clean", "correct_vs_noisy", "incorrect_vs_clean", "incorrect_vs_noisy")
QUICK_N, QUICK_N_TEST, QUICK_EPOCHS = 512, 500, 60
MEDIUM_LR = 1e-4
MEDIUM_EPOCHS = {"mlp7": 500, "mlp5": 300, "mlp3": 300}
PAPER_WIDTHS = {
    "mlp7": (2048, 2048, 1024, 1024, 512, 512),
    "mlp5": (2048, 1024, 512, 512),
    "mlp3": (1024, 512),
}


@dataclass(frozen=True)
class Run:
    """One stacked training run: one architecture, replicas = settings x seeds."""

    model: str
    hidden: tuple[int, ...]
    dataset: str
    noise_rate: float
    train: TrainSpec
    seed: int = 0
    seeds_per_setting: int = 1
    n_train: int | None = None  # None: the whole training set
    n_test: int | None = None
    settings: tuple[str, ...] = SETTINGS
    # The paper's "Softmax function applied to the output layer before calculating the cross-entropy
    # loss" read literally: a softmax layer whose output PyTorch's cross-entropy softmaxes again
    # (SoftmaxOutputMLP). False (the default, every tier): logits fed to the cross-entropy.
    softmax_output: bool = False
    paper: str = field(default=PAPER, init=False)

    @property
    def name(self) -> str:
        return f"{self.model}-s{self.seed}"

    @property
    def replicas(self) -> list[tuple[str, int]]:
        """(setting, replica seed) pairs. A noisy replica and its control share the seed, hence the
        initialization, the data order and the mask: the control tags exactly the samples that
        the noisy replica flips, and differs from it only in keeping their labels."""
        return [(s, self.seed * 100 + k) for s in self.settings for k in range(self.seeds_per_setting)]


QUICK_WIDTHS = {
    "mlp7": (512, 512, 256, 256, 128, 128),
    "mlp5": (512, 256, 128, 128),
    "mlp3": (256, 128),
}
# 8 seeds, not 5: with 5, MLP5's CS first - deepest (0.064 [0.049, 0.080] against 0.05) was
# inconclusive at base seed 1 while reproduced at base seed 0 (docs/stability.md)
QUICK_SEEDS = 8
# Six checkpoints a decade (not 1-2-5): a half-way epoch lands on a checkpoint, so a ratio of two
# such epochs moves in steps of about 1.5x, not 2-2.5x; on the 1-2-5 grid one twin of MLP5 read
# a factor of 5 and its control was inconclusive (docs/ddmlp.md).
QUICK_MANTISSAS = (1, 1.5, 2, 3, 5, 7)
# small: ten checkpoints a decade, evenly spaced on the log axis, so the running mean that reads the
# fall and recovery (measures.activations.SMOOTHING_DECADES, +-0.25 decades) averages five checkpoints
SMALL_MANTISSAS = (1, 1.25, 1.6, 2, 2.5, 3.2, 4, 5, 6.3, 8)
# small: one CPU machine, what the quick budget cannot hold: the double descent needs the training set
# fully fitted and then time to re-generalize. The one-seed probe of ../shared/ENGINEERING-NOTES.md
# (1,024 images, Adam lr 1e-3, batch 64, MLP7 at a quarter of the paper's widths) fell 13.4 points by
# epoch 102, fitted the training set by epoch 203 and held a 5.9-point recovery from epoch 241 on;
# MLP3 hardly recovered. MLP7, MLP5 and MLP3 at one factor of the paper's widths (docs/ddmlp.md has
# the search); SMALL_EPOCHS leaves the last smoothing window (+-0.25 decades) after the full fit.
SMALL_MODELS = ("mlp7", "mlp5", "mlp3")
SMALL_WIDTH = 0.25  # of PAPER_WIDTHS, every layer: MLP7 512-512-256-256-128-128, as QUICK_WIDTHS
SMALL_N, SMALL_N_TEST, SMALL_BATCH, SMALL_LR, SMALL_EPOCHS = 1024, 2000, 64, 1e-3, 400
# 10 seeds, not 5: MLP7's recovery minus a quarter of its fall (the double-descent criterion) spreads with
# sd 1.0 point over seeds around -1.0; with 5 seeds its t-interval read inconclusive at base seed 0 and
# not reproduced at base seed 1 (docs/ddmlp.md). Not 8: the first 8 of base seed 1's ten seeds straddle 0
# ([-2.1, +0.2] from their per-seed values), though 8 fit 18 minutes at two threads (17.1 min of runs). Not 12: a step of 24 stacked
# MLP7 replicas took 1.5x one of 20 on this CPU. Every model trains as many seeds: the runs of a tier
# combine along `replica` only at one size (store.combine).
SMALL_SEEDS = 10
MEDIUM_SEEDS = 3


def runs(tier: str, seed: int = 0) -> list[Run]:
    """The runs of a tier; every run stacks each seed's noisy replica with its clean-label twin.

    quick: Fashion-MNIST on two CPU cores, widths a quarter of the paper's in every layer, depths 7/5/3,
    8 seeds (docs/quick-settings.md has the search). small: MLP7, MLP5 and MLP3 at a quarter of the
    paper's widths, Adam lr 1e-3 at batch 64 on 1,024 images for 400 epochs, 10 seeds (docs/ddmlp.md). medium: one GPU, the paper's widths on the
    full Fashion-MNIST, 3 seeds (docs/ddmlp-medium.md). full: the paper's CIFAR-10 setting.
    With REPRODUCE_SHRINK=1 the small and medium runs shrink to a CPU-sized copy (same names, same code path)
    so that a CPU test can drive the medium claim cases end to end.
    """
    if tier == "small":
        spec = TrainSpec(optimizer="adam", lr=SMALL_LR, batch_size=SMALL_BATCH, epochs=SMALL_EPOCHS,
                         checkpoints=log_schedule(SMALL_EPOCHS, first=0.1, mantissas=SMALL_MANTISSAS))
        small = [Run(m, scaled_widths(m, SMALL_WIDTH), "fashion_mnist", 0.3, spec, seed,
                     seeds_per_setting=SMALL_SEEDS, n_train=SMALL_N, n_test=SMALL_N_TEST) for m in SMALL_MODELS]
        return _shrunk(small) if shrinking() else small
    if tier == "quick":
        spec = TrainSpec(optimizer="adam", lr=1e-3, batch_size=64, epochs=QUICK_EPOCHS,
                         checkpoints=log_schedule(QUICK_EPOCHS, first=0.01, mantissas=QUICK_MANTISSAS))
        return [Run(m, w, "fashion_mnist", 0.3, spec, seed, seeds_per_setting=QUICK_SEEDS, n_train=QUICK_N,
                    n_test=QUICK_N_TEST) for m, w in QUICK_WIDTHS.items()]
    if tier == "medium":
        return _shrunk(medium_runs(seed)) if shrinking() else medium_runs(seed)
    if tier == "full":
        runs_ = []
        for model, widths in PAPER_WIDTHS.items():
            epochs = 1e5 if model == "mlp7" else 1e6
            spec = TrainSpec(optimizer="adam", lr=1e-5, batch_size=512, epochs=epochs,
                             checkpoints=log_schedule(epochs, first=0.01))
            runs_.append(Run(model, widths, "cifar10", 0.3, spec, seed))
        return runs_
    raise ValueError(f"unknown tier {tier!r}")


def scaled_widths(model: str, factor: float) -> tuple[int, ...]:
    """The paper's widths of `model`, every layer scaled by one factor (the shapes kept)."""
    return tuple(int(round(w * factor)) for w in PAPER_WIDTHS[model])


def medium_runs(seed: int = 0) -> list[Run]:
    """One GPU: the paper's widths on the full Fashion-MNIST (60,000 / 10,000), 30% flip, Adam,
    batch 512, 3 seeds each stacked with its clean-label twin. MLP7 trains longest: it is the
    model whose test accuracy falls and recovers (Fig. 1); the reasoning is in docs/ddmlp-medium.md."""
    runs_ = []
    for model, widths in PAPER_WIDTHS.items():
        epochs = MEDIUM_EPOCHS[model]
        spec = TrainSpec(optimizer="adam", lr=MEDIUM_LR, batch_size=512, epochs=epochs,
                         checkpoints=log_schedule(epochs, first=0.01))
        runs_.append(Run(model, widths, "fashion_mnist", 0.3, spec, seed, seeds_per_setting=MEDIUM_SEEDS))
    return runs_


def _shrunk(medium: list[Run]) -> list[Run]:
    """The small or medium runs at test size: narrow widths, a small subset, a few epochs; names unchanged."""
    shrunk = []
    for run in medium:
        spec = replace(run.train, epochs=4, batch_size=64, lr=1e-3, checkpoints=log_schedule(4, first=0.5))
        # at least 16 neurons a layer: a layer of 4 can go all but silent, and Eq. 5 is then 0/0
        shrunk.append(replace(run, hidden=tuple(max(w // 16, 16) for w in run.hidden), train=spec,
                              n_train=400, n_test=200))
    return shrunk


def prepare(run: Run, device: torch.device) -> tuple[ImageData, torch.Tensor, torch.Tensor]:
    """Data on the device, and per replica the training labels (R, N) and noisy masks (R, N)."""
    data = load_dataset(run.dataset)
    if run.n_train or run.n_test:
        data = data.subset(run.n_train, run.n_test, seed=run.seed)
    data = data.to(device)
    labels, masks = [], []
    for setting, replica_seed in run.replicas:
        protocol = "flip" if setting == "noisy" else "tag"
        noisy = corrupt_labels(data.train_y.cpu(), data.num_classes, protocol, run.noise_rate, seed=10_000 + replica_seed)
        labels.append(noisy.labels)
        masks.append(noisy.noisy)
    return data, torch.stack(labels).to(device), torch.stack(masks).to(device)


def make_probe(data: ImageData, labels: torch.Tensor, noisy: torch.Tensor, widths: list[int], chunk: int = 4096):
    """The ddmlp probe: every quantity of Fig. 1, 3, 4-5 and 7 at one checkpoint."""
    k = data.num_classes
    layers = len(widths)
    max_width = max(widths)

    def probe(model: StackedMLP) -> dict[str, xr.DataArray]:
        r = labels.shape[0]
        dev = labels.device
        loss = torch.zeros(r, len(SPLITS), dtype=torch.float64, device=dev)
        correct = torch.zeros_like(loss)
        count = torch.zeros_like(loss)
        train_sums = [torch.zeros(r, 2 * k, w, dtype=torch.float64, device=dev) for w in widths]
        test_sums = [torch.zeros(r, 2 * k, w, dtype=torch.float64, device=dev) for w in widths]
        magnitude = [torch.zeros(r, w, dtype=torch.float64, device=dev) for w in widths]
        noisy_abs = [torch.zeros(r, k * k, w, dtype=torch.float64, device=dev) for w in widths]
        noisy_count = torch.zeros(r, k * k, dtype=torch.float64, device=dev)

        def tally(split: int, logits: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> None:
            per_sample = F.cross_entropy(logits.transpose(1, 2), target, reduction="none")
            loss[:, split] += (per_sample * mask).sum(1)
            correct[:, split] += ((logits.argmax(-1) == target) & mask).sum(1)
            count[:, split] += mask.sum(1)

        for start in range(0, data.train_x.shape[0], chunk):
            sl = slice(start, start + chunk)
            logits, hidden = model(data.train_x[sl], return_hidden=True)
            y, m = labels[:, sl], noisy[:, sl]
            original = data.train_y[sl].expand_as(y)
            tally(0, logits, y, ~m)
            tally(1, logits, y, m)
            tally(2, logits, original, m)
            group = original + k * m.long()  # true class, and clean (0..K-1) or noisy (K..2K-1)
            cell = torch.where(m, original * k + y, -1)  # noisy samples only: (true class, noisy label)
            for layer, h in enumerate(hidden):
                sums, _ = group_sums(h, group, 2 * k)
                train_sums[layer] += sums
                magnitude[layer] += h.abs().sum(1, dtype=torch.float64)
                cell_sums, cell_n = group_sums(h.abs(), cell, k * k)
                noisy_abs[layer] += cell_sums
            noisy_count += cell_n
        for start in range(0, data.test_x.shape[0], chunk):
            sl = slice(start, start + chunk)
            logits, hidden = model(data.test_x[sl], return_hidden=True)
            target = data.test_y[sl].expand(r, -1)
            tally(3, logits, target, torch.ones_like(target, dtype=torch.bool))
            wrong = (logits.argmax(-1) != target).long()
            for layer, h in enumerate(hidden):
                test_sums[layer] += group_sums(h, target + k * wrong, 2 * k)[0]

        cs = torch.stack([cosine_similarity(s[:, :k], s[:, k:]) for s in train_sums], 1)
        cs_test = torch.stack(
            [
                torch.stack(
                    [
                        cosine_similarity(t[:, :k], s[:, :k]),
                        cosine_similarity(t[:, :k], s[:, k:]),
                        cosine_similarity(t[:, k:], s[:, :k]),
                        cosine_similarity(t[:, k:], s[:, k:]),
                    ],
                    -1,
                )
                for s, t in zip(train_sums, test_sums)
            ],
            1,
        )
        n = data.train_x.shape[0]
        padded = torch.full((r, layers, max_width), float("nan"), dtype=torch.float64)
        for layer, mag in enumerate(magnitude):
            padded[:, layer, : widths[layer]] = (mag / n).cpu()
        layer_coord = np.arange(1, layers + 1)
        outlier = outlier_by_cell(magnitude, noisy_abs, noisy_count, k)
        return {
            "loss": xr.DataArray((loss / count).cpu().numpy(), dims=("replica", "split"), coords={"split": list(SPLITS)}),
            "accuracy": xr.DataArray((correct / count).cpu().numpy(), dims=("replica", "split"), coords={"split": list(SPLITS)}),
            "cs": xr.DataArray(cs.cpu().numpy(), dims=("replica", "layer", "class"),
                               coords={"layer": layer_coord, "class": np.arange(k)}),
            "cs_test": xr.DataArray(
                cs_test.cpu().numpy(), dims=("replica", "layer", "class", "pair"),
                coords={"layer": layer_coord, "class": np.arange(k), "pair": list(TEST_PAIRS)},
            ),
            "magnitude": xr.DataArray(padded.numpy(), dims=("replica", "layer", "neuron"),
                                      coords={"layer": layer_coord, "neuron": np.arange(max_width)}),
            "outlier_by_cell": xr.DataArray(outlier.cpu().numpy(), dims=("replica", "layer", "true_class", "noisy_label"),
                                            coords={"layer": layer_coord, "true_class": np.arange(k),
                                                    "noisy_label": np.arange(k)}),
        }

    return probe


def outlier_by_cell(magnitude: list[torch.Tensor], noisy_abs: list[torch.Tensor], noisy_count: torch.Tensor,
                    k: int) -> torch.Tensor:
    """Fig. 8: mean |activation| of each layer's largest neuron (by mean |activation| over the training
    set, i* of Eq. 5 at this checkpoint) on noisy samples, per (true class, noisy label) cell.

    Returns (R, layers, K, K); NaN where a cell has no noisy sample (the diagonal, under flip noise).
    The two-way table puts both groupings on equal footing: along a row the true class is fixed and
    the noisy label varies, along a column the reverse, each over the same cells. Only the largest
    neuron is kept, so the storage is K^2 numbers per layer and checkpoint.
    """
    counts = noisy_count.view(-1, k, k)
    per_layer = []
    for mag, sums in zip(magnitude, noisy_abs):
        star = mag.argmax(1)  # (R,)
        picked = sums.gather(2, star.view(-1, 1, 1).expand(-1, k * k, 1)).view(-1, k, k)
        per_layer.append(torch.where(counts > 0, picked / counts.clamp(min=1), torch.full_like(picked, float("nan"))))
    return torch.stack(per_layer, 1)


def execute(run: Run, device: torch.device, state_path=None, progress=None) -> xr.Dataset:
    """Train the run and return its results as one Dataset (dims epoch, replica, ...)."""
    data, labels, noisy = prepare(run, device)
    model = _model(run).to(device)
    probe = make_probe(data, labels, noisy, list(run.hidden))
    result = train(model, data.train_x, labels, run.train, probe,
                   order_seeds=[20_000 + s for _, s in run.replicas], state_path=state_path, progress=progress)
    ds = result.dataset
    ds = ds.assign_coords(
        model=run.model,
        setting=("replica", [s for s, _ in run.replicas]),
        init_seed=("replica", [s for _, s in run.replicas]),
        layer_width=("layer", list(run.hidden)),
    )
    ds = ds.assign_coords(sample=data.sample_index().cpu().numpy())
    ds["label"] = (("replica", "sample"), labels.cpu().numpy().astype(np.int16))
    ds["noisy_mask"] = (("replica", "sample"), noisy.cpu().numpy().astype(np.int8))
    ds["original_label"] = ("sample", data.train_y.cpu().numpy().astype(np.int16))
    ds["noisy_fraction"] = ("replica", noisy.double().mean(1).cpu().numpy())
    ds.attrs.update(
        diverged=int(result.diverged),
        diverged_epoch=float(result.diverged_epoch) if result.diverged else float("nan"),
        train_seconds=result.seconds,
        probe_seconds=result.probe_seconds,
        n_test=int(data.test_y.shape[0]),  # test accuracies move in steps of 1 / n_test
        steps=result.steps,
    )
    return ds


class SoftmaxOutputMLP(StackedMLP):
    """The stacked MLP with a softmax layer on its output: the paper's softmax reading (Sec. 2, "a
    Softmax function applied to the output layer before calculating the cross-entropy loss") taken
    literally in PyTorch, where the cross-entropy applies log-softmax to what it is given.

    The loss then sees softmax twice: for K classes, with p = softmax(z) in the simplex,
    -log softmax(p)_y = log(sum_j e^{p_j}) - p_y lies between log(e + K - 1) - 1 (p one-hot on y:
    1.461 nats for K = 10) and log(e + K - 1) (p one-hot elsewhere: 2.461 nats). Its gradient
    through the outer softmax is bounded too, so a confidently memorized noisy label cannot drive
    the loss, or the logits, up without bound as it does under the plain cross-entropy. The probe
    applies the same cross-entropy to this output, so the stored losses are the loss trained on.
    Accuracies (argmax) and hidden activations are unchanged by the extra layer.
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        # a state saved by this model carries this key, so engine.fingerprint tells it from a
        # plain model's state: a killed run resumes only into the same output layer
        self.register_buffer("softmax_output", torch.ones(()))

    def forward(self, x: torch.Tensor, return_hidden: bool = False):
        out = super().forward(x, return_hidden)
        if return_hidden:
            return out[0].softmax(-1), out[1]
        return out.softmax(-1)


def _model(run: Run) -> StackedMLP:
    cls = SoftmaxOutputMLP if run.softmax_output else StackedMLP
    return cls(INPUT_SHAPES[run.dataset], run.hidden, 10, seeds=[s for _, s in run.replicas])


def steps_and_flops(run: Run) -> tuple[int, float]:
    """Training steps and FLOPs of the run (2 FLOPs per multiply-add, backward = 2 x forward)."""
    return training_cost(_samples(run), run.train, _model(run).multiply_adds(),
                         len(run.replicas))


def _samples(run: Run) -> int:
    return run.n_train or TRAIN_SIZES[run.dataset]


def calibrate(run: Run, device: torch.device) -> float:
    """Seconds per training step of this run's stacked model on `device`; the CPU tiers' runs (on
    subsets of Fashion-MNIST) are timed at their own batch (`seconds_per_step`'s `samples`)."""
    return seconds_per_step(_model(run).to(device), INPUT_SHAPES[run.dataset], 10, run.train, device,
                            samples=_samples(run))


def timed_at_own_batch(run: Run) -> bool:
    """Whether `calibrate` times this run at its own batch (a CPU tier's run), so that --dry-run keeps
    its timing instead of the family's line (runner.estimate)."""
    return own_batch(_samples(run))




def calibrate_probe(run: Run, device: torch.device, max_samples: int = 512) -> float:
    """Seconds of one probe call for --dry-run, timed on random data of the run's shape.

    The probe's cost is about linear in the number of samples, so a GPU tier's run is timed on at most
    `max_samples` training and test samples and scaled up (the full CIFAR-10 set would not fit a dry
    run's memory). A CPU tier's run (`timed_at_own_batch`) is timed on all its samples (about 2 s for
    small's MLP7): scaled up from 768 samples, small's probes read 9-29% over the measured ones;
    timed whole, 9% under to 14% over (docs/speed.md, issue 35's sixth session).
    """
    n = _samples(run)
    n_test = run.n_test or TEST_SIZES[run.dataset]
    sub, sub_test = (n, n_test) if own_batch(n) else (min(n, max_samples), min(n_test, max_samples // 2))
    g = torch.Generator().manual_seed(0)
    shape = INPUT_SHAPES[run.dataset]
    data = ImageData(run.dataset, torch.rand(sub, *shape, generator=g), torch.randint(10, (sub,), generator=g),
                     torch.rand(sub_test, *shape, generator=g), torch.randint(10, (sub_test,), generator=g), 10).to(device)
    r = len(run.replicas)
    labels = torch.randint(10, (r, sub), generator=g).to(device)
    noisy = (torch.rand(r, sub, generator=g) < run.noise_rate).to(device)
    model = _model(run).to(device)
    probe = make_probe(data, labels, noisy, list(run.hidden))
    from reproduce.engine import _run_probe

    _run_probe(model, probe)  # warm-up
    start = time.perf_counter()
    _run_probe(model, probe)
    return (time.perf_counter() - start) * (n + n_test) / (sub + sub_test)
