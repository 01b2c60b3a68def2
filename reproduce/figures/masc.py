"""The MASC paper's Fig. 2 analogue (MASC accuracy by layer) and Table 1 analogue (gain over the model),
and `degree_summary`, the per-degree statistics the claims use.

Everything is recomputed from the stored per-layer accuracies: the best hidden layer is chosen per
replica on the 20% select split of the test set and scored on the other 80% (Sec. 6); replicas of
the same corruption degree (seeds) are then averaged, as the paper averages its three runs.
"""

from __future__ import annotations

import numpy as np
import xarray as xr
from matplotlib.figure import Figure

# Table 1 of the paper: relative gain (%) of best-layer corrupted-subspace MASC over the model's test accuracy.
PAPER_TABLE1 = {
    "MLP-MNIST": {0.2: 10.93, 0.4: 31.63, 0.6: 75.04, 0.8: 159.93},
    "CNN-Fashion-MNIST": {0.2: 7.49, 0.4: 33.50, 0.6: 84.93, 0.8: 189.00},
}


def run_of(ds: xr.Dataset, model: str) -> xr.Dataset:
    """One run of the combined results, found by its `model` coordinate; layer padding dropped."""
    if "run" in ds.dims:
        models = list(np.atleast_1d(ds["model"].values))  # a scalar when every run has the same model
        one = ds.isel(run=models.index(model) if len(models) == ds.sizes["run"] else 0)
    else:
        one = ds
    names = one["layer_name"].values
    layers = [i for i, n in enumerate(names) if isinstance(n, str) and n]
    return one.isel(layer=layers)


def _best_hidden(select: np.ndarray) -> np.ndarray:
    return np.argmax(select[..., 1:], axis=-1) + 1  # index 0 is the input: a baseline, never chosen


def degree_summary(run: xr.Dataset) -> dict[float, dict]:
    """Per corruption degree, averaged over its replicas (seeds): the model's test accuracy, the
    best hidden layer's MASC (corrupted and true subspaces) and the input's, all on the 80% eval split,
    and the model's accuracy after relabel-retraining where it was run."""
    acc = run.masc_accuracy
    model_eval = run.model_accuracy.dropna("epoch", how="all").isel(epoch=-1).sel(split="test_eval").values
    replicas = np.arange(run.sizes["replica"])
    out = {}
    per_replica = {}
    for subspace in ("corrupted", "true"):
        a = acc.sel(subspace=subspace)
        best = _best_hidden(a.sel(split="test_select").values)
        per_replica[subspace] = a.sel(split="test_eval").values[replicas, best]
        per_replica[f"{subspace}_layer"] = best
        per_replica[f"{subspace}_input"] = a.sel(split="test_eval").values[:, 0]
    if "retrain_accuracy" in run:
        per_replica["retrained"] = np.array([
            float(run.retrain_accuracy.sel(retrain_epoch=e, split="test_eval").isel(replica=i))
            for i, e in enumerate(run.retrain_chosen_epoch.values)])
    degrees = run.degree.values
    names = run.layer_name.values
    for p in sorted(set(degrees.tolist())):
        m = degrees == p
        model = float(model_eval[m].mean())
        row = dict(model=model, masc=float(per_replica["corrupted"][m].mean()),
                   masc_true=float(per_replica["true"][m].mean()),
                   input=float(per_replica["corrupted_input"][m].mean()),
                   layers=[str(names[i]) for i in per_replica["corrupted_layer"][m]],
                   true_layers=[str(names[i]) for i in per_replica["true_layer"][m]], replicas=int(m.sum()))
        row["gain"] = row["masc"] - model
        row["relative_gain"] = row["gain"] / model if model > 0 else float("nan")
        if "retrained" in per_replica:
            row["retrained"] = float(per_replica["retrained"][m].mean())
        out[float(p)] = row
    return out


def masc_table1(ds: xr.Dataset) -> tuple[list[str], list[list]]:
    """Table 1 analogue: our relative gain beside the paper's, per run and corruption degree."""
    columns = ["run", "degree", "model test acc", "best layer", "MASC test acc", "input MASC", "gain (points)",
               "relative gain (ours)", *[f"paper {k}" for k in PAPER_TABLE1]]
    rows = []
    for model in np.atleast_1d(ds["model"].values):
        for p, row in degree_summary(run_of(ds, str(model))).items():
            paper = [f"{PAPER_TABLE1[k][p]:.1f}%" if p in PAPER_TABLE1[k] else "" for k in PAPER_TABLE1]
            rows.append([str(model), f"{p:.0%}", f"{row['model']:.3f}", "/".join(sorted(set(row["layers"]))),
                         f"{row['masc']:.3f}", f"{row['input']:.3f}", f"{100 * row['gain']:+.1f}",
                         f"{100 * row['relative_gain']:+.1f}%", *paper])
    return columns, rows


def masc_by_layer(ds: xr.Dataset) -> Figure:
    """Fig. 2 analogue: MASC accuracy over layers with corrupted-label subspaces (train on corrupted
    labels, train on true labels, test), true-label subspaces' test accuracy dotted, and the model's
    train and test accuracy as horizontal lines; one column per degree, one row per run."""
    models = [str(m) for m in np.atleast_1d(ds["model"].values)]
    first = run_of(ds, models[0])
    degrees = sorted(set(first.degree.values.tolist()))
    columns = min(3, len(degrees))  # wrap the degrees: a 6-panel strip is unreadable at page width
    per_model = -(-len(degrees) // columns)
    fig = Figure(figsize=(3.2 * columns, 2.7 * per_model * len(models) + 0.6), layout="constrained")
    grid = fig.subplots(per_model * len(models), columns, squeeze=False, sharey=True)
    for m_index, model in enumerate(models):
        run = run_of(ds, model)
        names = [str(n) for n in run.layer_name.values]
        x = np.arange(len(names))
        final = run.model_accuracy.dropna("epoch", how="all").isel(epoch=-1)
        row = grid[m_index * per_model:(m_index + 1) * per_model].ravel()
        for ax in row[len(degrees):]:
            ax.set_visible(False)
        for ax, p in zip(row, degrees):
            m = run.degree.values == p
            acc = run.masc_accuracy.isel(replica=np.nonzero(m)[0]).mean("replica")
            c = acc.sel(subspace="corrupted")
            ax.plot(x, c.sel(split="train_corrupted"), "o-", label="MASC train (corrupted labels)")
            ax.plot(x, c.sel(split="train_true"), "s-", label="MASC train (true labels)")
            ax.plot(x, c.sel(split="test_eval"), "^-", label="MASC test")
            ax.plot(x, acc.sel(subspace="true", split="test_eval"), "^:", label="MASC test, true-label subspaces")
            model_acc = final.isel(replica=np.nonzero(m)[0]).mean("replica")
            ax.axhline(float(model_acc.sel(split="train_corrupted")), color="k", ls="--", lw=0.8, label="model train")
            ax.axhline(float(model_acc.sel(split="test_eval")), color="k", ls=":", lw=0.8, label="model test")
            ax.set_xticks(x, names, rotation=45, fontsize=7)
            ax.set_title(f"{model}, {p:.0%}", fontsize=9)
            ax.set_ylim(0, 1.02)
            ax.set_ylabel("accuracy", fontsize=8)
    handles, labels = grid[0, 0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside lower center", ncols=3, fontsize=8)
    return fig
