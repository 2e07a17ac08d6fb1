"""``idigdask catalog``: read any media source and write the normalized catalog."""

from __future__ import annotations

import argparse

from . import add_catalog_options, storage_options_arg


def register(subparsers) -> argparse.ArgumentParser:
    """Add the ``catalog`` sub-command."""
    p = subparsers.add_parser(
        "catalog", help="read a media source into one normalized catalog (parquet)",
        description="Read a GUODA parquet, a DwC-A, a URL table or an iDigBio search "
                    "('search:{\"rq\": {...}}' or a .../search/media?rq=... URL) and write "
                    "the normalized catalog as a parquet folder.")
    p.add_argument("source", metavar="SOURCE", help="path, fsspec URL or search source")
    p.add_argument("-o", "--output", required=True, metavar="OUT.parquet",
                   help="where to write the catalog (a parquet folder)")
    add_catalog_options(p)
    p.add_argument("--raw", action="store_true", help="keep the source's own fields as raw.<name>")
    p.add_argument("--media-type", default="images",
                   help="kind of media to keep usable (images, sounds, videos, or 'any')")
    p.add_argument("--sample", type=float, default=None, metavar="F",
                   help="keep each row with probability F (reproducible with --seed)")
    p.add_argument("--seed", type=int, default=0, help="seed of --sample and --per-label-cap")
    p.add_argument("--per-label-cap", type=int, default=None, metavar="N",
                   help="keep at most N usable rows per label")
    p.add_argument("--labels", default=None, metavar="TABLE",
                   help="label table to join (then --label-column names its label column)")
    p.add_argument("--join-on", default=None, metavar="C",
                   help="catalog column to join --labels on, or record_uuid (default)")
    p.add_argument("--label-how", choices=("left", "inner", "exclude"), default="left",
                   help="what happens to rows without a label (default: kept, label missing)")
    p.add_argument("--derivative", choices=("webview", "thumbnail", "fullsize"), default=None,
                   help="point access_uri at iDigBio's derivative of each media record")
    p.add_argument("--media-api", default="https://api.idigbio.org/v2", metavar="URL",
                   help="root of iDigBio's media API for --derivative")
    return p


def run(args: argparse.Namespace) -> dict:
    """Read, label, subset and write the catalog; return its counts."""
    from ..catalog import (attach_labels, cap_per_label, read_catalog, sample, summarize,
                           use_derivative, write_catalog)
    from ..errors import UserError

    options = storage_options_arg(args.storage_options)
    joining = args.labels is not None
    if joining and not args.label_column:
        raise UserError("--labels needs --label-column (the label column of the table)")
    df = read_catalog(
        args.source, format=args.source_format, storage_options=options,
        url_column=args.url_column, id_column=args.id_column,
        label_column=None if joining else args.label_column, raw=args.raw,
        media_type=None if args.media_type == "any" else args.media_type)
    if joining:
        df = attach_labels(df, args.labels, on=args.join_on or "record_uuid",
                           label=args.label_column, how=args.label_how)
    if args.sample is not None:
        df = sample(df, args.sample, args.seed)
    if args.per_label_cap is not None:
        df = cap_per_label(df, args.per_label_cap, args.seed)
    if args.derivative:
        df = use_derivative(df, args.derivative, base_url=args.media_api)
    write_catalog(df, args.output, storage_options=options)
    try:
        written = read_catalog(args.output, format="catalog", storage_options=options)
    except UserError:
        raise UserError(f"{args.source}: no rows to write (the subset is empty)") from None
    counts = summarize(written)
    return {"source": args.source if isinstance(args.source, str) else "search",
            "output": args.output, **counts}
