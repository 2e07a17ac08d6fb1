"""``idigdask synth``: write a folder of synthetic herbarium sheets with their catalog."""

from __future__ import annotations

import argparse
import re
from typing import Any

from ..errors import UserError

_SIZE = re.compile(r"^\s*(\d{1,6})\s*[xX]\s*(\d{1,6})\s*$")


def parse_size(text: str) -> tuple[int, int]:
    """Parse ``WIDTHxHEIGHT`` (e.g. ``2000x3000``), checking the bounds of the generator."""
    from ..synthetic import check_size

    match = _SIZE.match(text or "")
    if not match:
        raise UserError(f"--size must look like WIDTHxHEIGHT (e.g. 2000x3000), got {text!r}")
    try:
        return check_size((int(match.group(1)), int(match.group(2))))
    except UserError as exc:
        raise UserError(f"--size {text}: {exc}") from None


def register(subparsers: Any) -> argparse.ArgumentParser:
    """Add the ``synth`` sub-command."""
    p = subparsers.add_parser(
        "synth", help="write deterministic synthetic herbarium sheets, a media catalog and labels",
        description="Write OUT_DIR/images/<uuid>.jpg, OUT_DIR/media.parquet (GUODA schema) "
                    "and OUT_DIR/labels.csv.")
    p.add_argument("out_dir", metavar="OUT_DIR", help="folder to write into")
    p.add_argument("-n", type=int, default=200, help="number of sheets (default 200)")
    p.add_argument("--size", default="2000x3000", help="nominal sheet size WIDTHxHEIGHT (default 2000x3000)")
    p.add_argument("--stained-fraction", type=float, default=0.5,
                   help="fraction of sheets with mercury-like stains (default 0.5)")
    p.add_argument("--seed", type=int, default=0, help="seed of the set (default 0)")
    p.add_argument("--base-url", default=None,
                   help="write accessuri as BASE_URL/images/<uuid>.jpg instead of local paths")
    p.add_argument("--quality", type=int, default=90, help="JPEG quality (default 90)")
    p.add_argument("--jobs", type=int, default=None, help="worker processes (default: all cores)")
    return p


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Generate the sheets and return a summary."""
    from ..synthetic import make_sheets

    size = parse_size(args.size)
    result = make_sheets(args.out_dir, args.n, size=size, stained_fraction=args.stained_fraction,
                         seed=args.seed, base_url=args.base_url, quality=args.quality,
                         n_jobs=args.jobs)
    stained = sum(result.stained)
    return {"n": result.n, "stained": stained, "clean": result.n - stained,
            "folder": result.folder, "catalog": result.catalog, "labels": result.labels}
