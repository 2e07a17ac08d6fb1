"""``idigdask ledger STORE``: what became of every catalog row, counted by status and reason."""

from __future__ import annotations

import argparse
from typing import Any

from . import storage_options_arg


def register(sub) -> argparse.ArgumentParser:
    p = sub.add_parser("ledger", help="counts of a store's ledger by status and reason",
                       description=__doc__)
    p.add_argument("store", help="the store: a folder or fsspec URL")
    p.add_argument("--storage-options", default=None, metavar="JSON")
    p.add_argument("--failed", type=int, default=0, metavar="N",
                   help="also list the first N failed rows")
    return p


def run(args: argparse.Namespace) -> dict[str, Any]:
    from ..store import ledger_counts, read_ledger

    ledger = read_ledger(args.store, storage_options_arg(args.storage_options))
    summary = ledger_counts(ledger)
    if args.failed:
        failed = ledger[ledger["status"] == "failed"].head(args.failed)
        summary["failed_rows"] = {
            str(u): f"{r}: {m}" for u, r, m in
            zip(failed["media_uuid"], failed["reason"], failed["message"])}
    return summary
