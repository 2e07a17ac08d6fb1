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


#: The sound demo's defaults: recordings of two call types, and its training settings
#: (the calls CNN learns in a few epochs at a learning rate above the image CNN's).
SOUND_DEFAULTS = {"n": 240, "epochs": 30, "seed": 0}
SOUND_TRAIN_OPTIONS = {"batch_size": 32, "learning_rate": 2e-3, "patience": 6,
                       "lr_patience": 2, "augment": True}


def run_sound_demo(
    out: str | Path = "idigdask-demo-sounds",
    *,
    n: int = SOUND_DEFAULTS["n"],
    epochs: int = SOUND_DEFAULTS["epochs"],
    seed: int = SOUND_DEFAULTS["seed"],
    n_workers: int | None = None,
    say: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Run the route on synthetic animal calls: recordings to a held-out report.

    Synthetic recordings of whistled and trilled calls (WAV, FLAC, OGG and MP3 at
    several sample rates, some in stereo, some opening with a spoken introduction,
    a few broken on purpose) go through a GUODA-schema catalog whose ``mediatype`` is
    ``sounds``, labels joined through the specimen uuids, a build into a store of
    log-mel spectrogram clips (the broken files ledgered with their reasons), the
    calls CNN trained through the Dask-fed feed on a specimen-level split, an
    evaluation of clips and of whole recordings, and predictions per recording.

    Parameters
    ----------
    out : str or Path
        Folder for the recordings, the store, the model and the report.
    n : int
        Recordings (half of each call type).
    epochs : int
        Maximum training epochs (early stopping may end sooner).
    seed : int
        Seed of the recordings, the split and the training.
    n_workers : int, optional
        Worker processes of the LocalCluster (default: one in-process worker with a
        thread per core).
    say : callable
        Where progress lines go.

    Returns
    -------
    dict
        Paths of the outputs and the held-out metrics (``accuracy`` of clips,
        ``recording_accuracy`` of whole recordings).

    Examples
    --------
    >>> summary = run_sound_demo("idigdask-demo-sounds", n=80)   # doctest: +SKIP
    >>> # idigdask-demo-sounds/report/index.html
    """
    import shutil

    from distributed import Client, LocalCluster

    from .batches import FeedOptions
    from .build import build_dataset
    from .catalog import attach_labels, read_catalog
    from .cluster import local_cluster_kwargs
    from .evaluate import evaluate
    from .options import with_overrides
    from .predict import predict
    from .store import read_ledger
    from .synthetic_calls import write_call_catalog
    from .train import TrainOptions, train

    train_options = with_overrides(
        TrainOptions, None,
        {**SOUND_TRAIN_OPTIONS, "label": "label", "model": "calls", "epochs": epochs,
         "seed": seed, "resume": False}, nested={"feed": FeedOptions})
    out = Path(out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    timings: dict[str, float] = {}
    begin = time.perf_counter()
    with LocalCluster(**local_cluster_kwargs(n_workers)) as cluster, Client(cluster) as client:
        say(f"[demo] Dask dashboard: {client.dashboard_link}")
        t = _step(say, f"1/5 writing {n} synthetic call recordings (whistles and trills; "
                       f"WAV, FLAC, OGG, MP3) and a few broken files in {out / 'calls'}")
        media = write_call_catalog(out / "calls", n=n, seed=seed, faults=True)
        timings["synthesize"] = time.perf_counter() - t

        t = _step(say, "2/5 reading the catalog (mediatype sounds) and joining the labels")
        catalog = read_catalog(str(media), media_type="sounds")
        catalog = attach_labels(catalog, str(media.parent / "labels.csv"), on="record_uuid",
                                label="call")
        timings["catalog"] = time.perf_counter() - t

        store = out / "calls.zarr"
        if store.exists():
            shutil.rmtree(store)
        t = _step(say, f"3/5 building the spectrogram store {store}")
        built = build_dataset(catalog, str(store), media="sounds", trim="intro",
                              progress=False)
        timings["build"] = time.perf_counter() - t
        ledger = read_ledger(str(store))
        failed = ledger[ledger["status"] == "failed"]
        say(f"[demo]     {built.images} clips from {int((ledger['status'] == 'ok').sum())} "
            f"recordings; ledger {built.counts['status']}; failed: "
            + ", ".join(sorted(failed["reason"].astype(str))))

        report = out / "report"
        _plot_clips(store, report / "spectrograms.png", seed)

        model_dir = out / "model"
        t = _step(say, f"4/5 training the calls CNN for up to {epochs} epochs in {model_dir}")
        train(str(store), str(model_dir), train_options, client=client)
        timings["train"] = time.perf_counter() - t

        t = _step(say, f"5/5 evaluating on held-out specimens and predicting every recording, "
                       f"report in {report}")
        metrics = evaluate(str(model_dir), str(store), out=str(report))
        predictions = predict(str(model_dir), str(store),
                              out=str(report / "predictions.parquet"), client=client)
        timings["evaluate"] = time.perf_counter() - t
    timings["total"] = time.perf_counter() - begin
    recordings = metrics.get("recordings", {})
    summary = {
        "report": str(report), "store": str(store), "model": str(model_dir),
        "images": built.images, "clips": built.images,
        "recordings": int((ledger["status"] == "ok").sum()),
        "failed": {str(k): int(v) for k, v in failed["reason"].value_counts().items()},
        "accuracy": metrics.get("accuracy"), "roc_auc": metrics.get("roc_auc"),
        "recording_accuracy": recordings.get("accuracy"),
        "recording_n": recordings.get("n"),
        "predictions": str(report / "predictions.parquet"),
        "predicted_recordings": int(len(predictions)),
        "seconds": {k: round(v, 1) for k, v in timings.items()},
    }
    _write_sound_summary(report, summary, metrics)
    say(f"[demo] held-out accuracy: clips {_num(summary['accuracy'])}, recordings "
        f"{_num(summary['recording_accuracy'])} (n={summary['recording_n']}); done in "
        f"{timings['total']:.0f} s. Open {report / 'index.html'}")
    return summary


def _plot_clips(store: Path, path: Path, seed: int, per_class: int = 4) -> str:
    """A grid of a few clips of each class of a store of sounds, as the network sees them."""
    import numpy as np

    from .report import plot_image_grid
    from .store import open_dataset

    ds = open_dataset(str(store))
    labels = np.asarray(ds["label"].values).astype(object).astype(str)
    offsets = np.asarray(ds["offset"].values)
    rng = np.random.default_rng(seed)
    picked = [int(i) for c in sorted(set(labels) - {""})
              for i in rng.choice(np.flatnonzero(labels == c), per_class, replace=False)]
    clips = ds["spectrograms"].values[picked]
    titles = [f"{labels[i]} at {offsets[i]:.0f} s" for i in picked]
    path.parent.mkdir(parents=True, exist_ok=True)
    return plot_image_grid(clips, titles, path, ncols=per_class)


def _write_sound_summary(report: Path, summary: dict[str, Any], metrics: dict[str, Any]) -> None:
    """The sound demo's page: the figures, the clip and recording metrics, the failures."""
    from html import escape

    report.mkdir(parents=True, exist_ok=True)
    (report / "summary.json").write_text(json.dumps(summary, indent=2, default=str))
    figures = "".join(f'<figure><img src="{p.name}" width="480"><figcaption>{p.name}'
                      "</figcaption></figure>" for p in sorted(report.glob("*.png")))
    rec = metrics.get("recordings", {})
    per_class = "".join(
        f"<tr><td>{escape(str(c))}</td><td>{_num(m.get('precision'))}</td>"
        f"<td>{_num(m.get('recall'))}</td><td>{_num(m.get('f1'))}</td></tr>"
        for c, m in (metrics.get("per_class") or {}).items())
    failed = "".join(f"<li>{escape(k)}: {v}</li>" for k, v in summary["failed"].items())
    times = ", ".join(f"{k} {v} s" for k, v in summary["seconds"].items())
    (report / "index.html").write_text(
        "<!doctype html><meta charset='utf-8'><title>idigdask sound demo</title>"
        "<h1>Call-type classification on synthetic recordings</h1>"
        f"<p>{summary['clips']} spectrogram clips of {summary['recordings']} recordings in "
        f"<code>{escape(summary['store'])}</code>; model in "
        f"<code>{escape(summary['model'])}</code>. Times: {times}.</p>"
        f"<h2>Held-out specimens</h2><table><tr><th></th><th>n</th><th>accuracy</th></tr>"
        f"<tr><td>clips</td><td>{metrics.get('n')}</td><td>{_num(metrics.get('accuracy'))}</td></tr>"
        f"<tr><td>recordings (mean of their clips)</td><td>{rec.get('n')}</td>"
        f"<td>{_num(rec.get('accuracy'))}</td></tr></table>"
        f"<h3>Per class (clips)</h3><table><tr><th>class</th><th>precision</th><th>recall</th>"
        f"<th>F1</th></tr>{per_class}</table>"
        f"<h2>Recordings the build could not use</h2><ul>{failed}</ul>"
        f"<p>Predictions per recording: <code>predictions.parquet</code>; all metrics: "
        f"<a href='metrics.json'>metrics.json</a></p>{figures}\n")
