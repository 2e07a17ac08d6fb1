"""``idigdask report STORE -o OUT``: the data-quality report of a store and its ledger."""

from __future__ import annotations

import argparse
from typing import Any

from . import add_cluster_options, cluster_settings, cluster_options_arg, storage_options_arg


def register(sub) -> argparse.ArgumentParser:
    p = sub.add_parser("report", help="data-quality report of a store: an HTML page of figures",
                       description=__doc__)
    p.add_argument("store", help="the store: a folder or fsspec URL")
    p.add_argument("-o", "--output", required=True, metavar="OUT",
                   help="the report folder (index.html, quality.json, figures)")
    p.add_argument("--storage-options", default=None, metavar="JSON",
                   help="fsspec storage options of the store, as JSON")
    add_cluster_options(p)
    return p


def run(args: argparse.Namespace) -> dict[str, Any]:
    from ..quality import quality_report

    storage_options = storage_options_arg(args.storage_options)
    with cluster_settings(args):
        report = quality_report(args.store, args.output, storage_options=storage_options,
                                client=args.scheduler, cluster_options=cluster_options_arg(args))
    return {"report": report["index"], "rows": report["rows"], "status": report["status"],
            "hosts": report["n_hosts"], "recordsets": report["n_recordsets"],
            "duplicate_clusters": report["duplicates"]["clusters"],
            "plots": report["plots"], "seconds": report["seconds"], "cluster": report["cluster"]}
