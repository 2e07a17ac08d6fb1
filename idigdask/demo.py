"""The main job on its embedded default data: stained-sheet detection end to end.

Synthetic herbarium sheets (some with mercury-like stains) go through every stage
of the real pipeline: a GUODA-schema catalog, labels joined through the specimen
uuids, a Zarr store built by Dask and its data-quality report, the reference CNN
trained through the Dask-fed feed and the classical baseline on the same split, and
an evaluation on held-out specimens (overall, per recordset and per source size, the
baseline beside the CNN), Grad-CAM stain maps of where the network looks, and a
second, three-family task whose labels come from the sheets' specimen records, all
written as one report folder.
"""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path
from typing import Any, Callable

DEFAULTS = {"n": 1200, "epochs": 24, "size": 128, "sheet_size": (500, 750), "seed": 0}

#: Training settings of the demo, over the configured ones (fields of
#: :class:`~idigdask.train.TrainOptions` and its feed's): the paper's learning rate,
#: halved whenever the validation loss stalls for two epochs, batch-norm statistics that
#: keep up with a short run, and a patience that rides out the noisy validation loss of
#: a small validation split. About a thousand small sheets fit the time of a
#: demonstration on a laptop; the store's 128 px is what the network sees, whatever the
#: sheet size.
TRAIN_OPTIONS = {"batch_size": 32, "learning_rate": 1e-4, "bn_momentum": 0.9, "patience": 6,
                 "lr_patience": 2, "augment": True}

#: The synthetic catalog's rows all come from one recordset: the demo deals them to
#: this many synthetic herbaria, in blocks of catalog order (as a GUODA dump is
#: ordered by recordset), so that the report shows its figures per recordset.
RECORDSETS = 4


def _step(say: Callable[[str], None], text: str) -> float:
    say(f"[demo] {text}")
    return time.perf_counter()


def run_demo(
    out: str | Path = "idigdask-demo",
    *,
    n: int = DEFAULTS["n"],
    epochs: int = DEFAULTS["epochs"],
    size: int = DEFAULTS["size"],
    sheet_size: tuple[int, int] = DEFAULTS["sheet_size"],
    model: str = "smithsonian",
    seed: int = DEFAULTS["seed"],
    n_workers: int | None = None,
    say: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Run the whole route on synthetic sheets and write a report folder.

    Parameters
    ----------
    out : str or Path
        Folder for the sheets, the store, the model and the report.
    n : int
        Number of synthetic sheets (half of them stained).
    epochs : int
        Maximum training epochs (early stopping may end sooner).
    size : int
        Side of the stored images and of the network's input.
    sheet_size : (int, int)
        Width and height of the synthetic sheets in pixels.
    model : str
        Model name, see :func:`idigdask.models.build_model`.
    seed : int
        Seed of the sheets, the split and the training.
    n_workers : int, optional
        Worker processes of the LocalCluster (default: one in-process worker with a
        thread per core).
    say : callable
        Where progress lines go.

    Returns
    -------
    dict
        Paths of the outputs and the held-out metrics.

    Examples
    --------
    >>> summary = run_demo("idigdask-demo", n=200, epochs=2)  # doctest: +SKIP
    >>> # idigdask-demo/report/index.html: metrics, curves, confusion matrix, ROC
    """
    from distributed import Client, LocalCluster

    from .batches import FeedOptions
    from .catalog import attach_labels, read_catalog
    from .cluster import local_cluster_kwargs
    from .evaluate import evaluate
    from .explain import explain
    from .options import with_overrides
    from .quality import quality_report
    from .synthetic import make_sheets
    from .train import TrainOptions, train

    # checked before anything is made: a bad option costs no sheets
    train_options = with_overrides(
        TrainOptions, None,
        {**TRAIN_OPTIONS, "label": "label", "model": model, "epochs": epochs, "seed": seed,
         "resume": False}, nested={"feed": FeedOptions})

    out = Path(out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    timings: dict[str, float] = {}
    begin = time.perf_counter()

    with LocalCluster(**local_cluster_kwargs(n_workers)) as cluster, Client(cluster) as client:
        say(f"[demo] Dask dashboard: {client.dashboard_link}")
        t = _step(say, f"1/9 generating {n} synthetic herbarium sheets "
                       f"({sheet_size[0]}x{sheet_size[1]} px) in {out / 'sheets'}")
        sheets = make_sheets(out / "sheets", n=n, size=sheet_size, stained_fraction=0.5,
                             seed=seed)
        timings["synthesize"] = time.perf_counter() - t

        t = _step(say, "2/9 reading the GUODA-schema catalog and joining the labels")
        catalog = read_catalog(str(sheets.catalog))
        catalog = attach_labels(catalog, str(sheets.labels), on="record_uuid", label="stained")
        catalog = with_recordsets(catalog.compute(), RECORDSETS)
        timings["catalog"] = time.perf_counter() - t

        store = out / "sheets.zarr"
        t = _step(say, f"3/9 building the Zarr store {store} ({size}x{size})")
        built = build_dataset_quiet(catalog, store, size=size)
        timings["build"] = time.perf_counter() - t
        say(f"[demo]     {built.images} images stored; ledger {built.counts['status']}")

        report = out / "report"
        t = _step(say, f"4/9 the data-quality report of the store, in {report / 'quality'}")
        quality = quality_report(str(store), report / "quality", client=client)
        timings["quality"] = time.perf_counter() - t

        model_dir = out / "model"
        t = _step(say, f"5/9 training the {model} CNN for up to {epochs} epochs in {model_dir}")
        train(str(store), str(model_dir), train_options, client=client)
        timings["train"] = time.perf_counter() - t

        baseline_dir = out / "baseline"
        t = _step(say, "6/9 training the classical baseline (colour and texture features, "
                       f"dask-ml logistic regression) on the same split in {baseline_dir}")
        train(str(store), str(baseline_dir), model="baseline", label="label", seed=seed,
              client=client)
        timings["baseline"] = time.perf_counter() - t

        t = _step(say, f"7/9 evaluating both on held-out specimens, report in {report}")
        metrics = evaluate(str(model_dir), str(store), out=str(report),
                           compare=[str(baseline_dir)])
        timings["evaluate"] = time.perf_counter() - t

        maps_dir = out / "stain-maps"
        t = _step(say, f"8/9 stain maps: where the CNN looks on every sheet, in {maps_dir}")
        maps = explain(str(model_dir), str(store), out=str(maps_dir),
                       grid_path=str(report / "stain-maps.png"), client=client)
        timings["explain"] = time.perf_counter() - t

        # a second task, from specimen metadata: which family a sheet's plant is
        n_family = max(60, n // 4)
        t = _step(say, f"9/9 a multi-class task from specimen records: {n_family} sheets of "
                       "three families (herbs, ferns, club-mosses), labels joined from "
                       "their records' family")
        families = make_sheets(out / "families", n=n_family, size=sheet_size,
                               stained_fraction=0.0, seed=seed, task="family")
        family_catalog = attach_labels(read_catalog(str(families.catalog)),
                                       str(families.records), label="family")
        family_store = out / "families.zarr"
        build_dataset_quiet(family_catalog, family_store, size=size)
        family_dir = out / "family-model"
        train(str(family_store), str(family_dir),
              dataclasses.replace(train_options, augment=True), client=client)
        family = evaluate(str(family_dir), str(family_store), out=str(report / "families"))
        timings["families"] = time.perf_counter() - t

    timings["total"] = time.perf_counter() - begin
    baseline = metrics["compared"]["baseline"]
    summary = {
        "report": str(report),
        "store": str(store),
        "model": str(model_dir),
        "baseline": str(baseline_dir),
        "quality": quality["index"],
        "images": built.images,
        "accuracy": metrics.get("accuracy"),
        "roc_auc": metrics.get("roc_auc"),
        "baseline_accuracy": baseline["accuracy"],
        "baseline_roc_auc": baseline["roc_auc"],
        "stain_maps": maps.out,
        "stain_regions": int(len(maps.regions)),
        "family_accuracy": family.get("accuracy"),
        "family_classes": family["confusion_matrix"]["classes"],
        "seconds": {k: round(v, 1) for k, v in timings.items()},
    }
    _write_summary(report, summary, metrics)
    say(f"[demo] families: held-out accuracy {_num(summary['family_accuracy'])} over "
        f"{len(summary['family_classes'] or [])} classes")
    say(f"[demo] held-out accuracy {summary['accuracy']:.3f} (baseline "
        f"{summary['baseline_accuracy']:.3f}), ROC AUC {_num(summary['roc_auc'])} (baseline "
        f"{_num(summary['baseline_roc_auc'])}); done in {timings['total']:.0f} s. "
        f"Open {report / 'index.html'}")
    return summary


def _num(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"


def with_recordsets(catalog, count: int):
    """The catalog with its rows dealt to ``count`` recordsets in blocks of catalog order.

    Parameters
    ----------
    catalog : pandas.DataFrame
        A catalog in the media schema.
    count : int
        Recordsets: ``synthetic-herbarium-1`` ... in order.

    Returns
    -------
    pandas.DataFrame
        A copy whose ``recordset`` column names each row's block.

    Examples
    --------
    >>> import pandas as pd
    >>> with_recordsets(pd.DataFrame({"media_uuid": list("abcd")}), 2)["recordset"].tolist()
    ['synthetic-herbarium-1', 'synthetic-herbarium-1', 'synthetic-herbarium-2', 'synthetic-herbarium-2']
    """
    import numpy as np

    out = catalog.reset_index(drop=True).copy()
    block = np.arange(len(out)) * max(1, int(count)) // max(1, len(out))
    out["recordset"] = [f"synthetic-herbarium-{b + 1}" for b in block]
    return out


def build_dataset_quiet(catalog, store: Path, *, size: int):
    """Build the demo's store on the current client (a fresh store each run)."""
    import shutil

    from .build import build_dataset

    if store.exists():
        shutil.rmtree(store)
    return build_dataset(catalog, str(store), size=size, resize_mode="pad", progress=False)


def _write_summary(report: Path, summary: dict[str, Any], metrics: dict[str, Any]) -> None:
    """A short HTML page and a JSON file pointing at the metrics, plots and quality page."""
    from html import escape

    report.mkdir(parents=True, exist_ok=True)
    (report / "summary.json").write_text(json.dumps(summary, indent=2, default=str))
    plots = sorted(p.name for p in report.glob("*.png"))
    rows = "".join(
        f"<tr><td>{k}</td><td>{v:.4f}</td></tr>" if isinstance(v, float)
        else f"<tr><td>{k}</td><td>{v}</td></tr>"
        for k, v in metrics.items() if not isinstance(v, (dict, list)))
    models = {metrics.get("model") or "cnn": {"n": metrics["n"], "accuracy": metrics["accuracy"],
                                               "macro_f1": metrics["macro"]["f1"],
                                               "roc_auc": metrics["roc_auc"]},
              **metrics.get("compared", {})}
    side = "".join(f"<tr><td>{escape(name)}</td><td>{m['n']}</td>"
                   f"<td>{_num(m['accuracy'])}</td><td>{_num(m['macro_f1'])}</td>"
                   f"<td>{_num(m['roc_auc'])}</td></tr>" for name, m in models.items())
    per_group = ""
    for key, title in (("by_recordset", "recordset"), ("by_source_size", "source size")):
        names = list(metrics.get(key, {}))
        head = "".join(f"<th>{escape(n)}</th>" for n in names)
        lines = "".join(
            f"<tr><td>{escape(model)}</td>" + "".join(
                f"<td>{_num(m.get(key, {}).get(g, {}).get('accuracy'))} "
                f"(n={m.get(key, {}).get(g, {}).get('n', 0)})</td>" for g in names) + "</tr>"
            for model, m in {metrics.get("model") or "cnn": metrics,
                             **metrics.get("compared", {})}.items())
        per_group += f"<h3>Accuracy per {title}</h3><table><tr><th>model</th>{head}</tr>{lines}</table>"
    figures = "".join(f'<figure><img src="{p}" width="480"><figcaption>{p}</figcaption>'
                      "</figure>" for p in plots)
    times = ", ".join(f"{k} {v} s" for k, v in summary["seconds"].items())
    (report / "index.html").write_text(
        "<!doctype html><meta charset='utf-8'><title>idigdask demo</title>"
        "<h1>Mercury-stain detection on synthetic herbarium sheets</h1>"
        f"<p>{summary['images']} images in <code>{summary['store']}</code>; model in "
        f"<code>{summary['model']}</code>, baseline in <code>{summary['baseline']}</code>. "
        f"Times: {times}.</p>"
        "<p>The data-quality report of the store: <a href='quality/index.html'>"
        "quality/index.html</a></p>"
        "<p>Where the CNN looks (Grad-CAM stain maps of the most confident positives): "
        "<a href='stain-maps.png'>stain-maps.png</a>; every image's map and regions in "
        f"<code>{escape(str(summary['stain_maps']))}</code>.</p>"
        "<p>A second task from specimen metadata, three plant families: held-out accuracy "
        f"{_num(summary['family_accuracy'])} ({escape(', '.join(summary['family_classes']))}); "
        "<a href='families/confusion.png'>confusion matrix</a>, "
        "<a href='families/metrics.json'>metrics</a></p>"
        "<h2>Held-out specimens: the CNN and the classical baseline</h2>"
        "<table><tr><th>model</th><th>test images</th><th>accuracy</th><th>macro F1</th>"
        f"<th>ROC AUC</th></tr>{side}</table>{per_group}"
        f"<h2>The CNN's metrics</h2><table>{rows}</table>"
        f"<p>All metrics: <a href='metrics.json'>metrics.json</a></p>{figures}\n")
