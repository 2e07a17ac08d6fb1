"""``idigdask demo``: the main job on synthetic sheets, with no network and no arguments."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from ..errors import UserError


def register(sub) -> argparse.ArgumentParser:
    from ..demo import DEFAULTS, SOUND_DEFAULTS

    p = sub.add_parser("demo", help="synthetic sheets -> store -> CNN -> held-out report",
                       description=__doc__)
    p.add_argument("-o", "--output", default=None,
                   help="output folder (idigdask-demo; idigdask-demo-sounds with --media sounds)")
    p.add_argument("--media", choices=["images", "sounds"], default="images",
                   help="herbarium sheets, or animal-call recordings (images)")
    p.add_argument("-n", type=int, default=None,
                   help=f"sheets ({DEFAULTS['n']}) or recordings ({SOUND_DEFAULTS['n']})")
    p.add_argument("--epochs", type=int, default=None,
                   help=f"maximum epochs ({DEFAULTS['epochs']}; sounds "
                        f"{SOUND_DEFAULTS['epochs']})")
    p.add_argument("--size", type=int, default=DEFAULTS["size"],
                   help=f"image side for the store and the network ({DEFAULTS['size']})")
    p.add_argument("--sheet-size", default="x".join(map(str, DEFAULTS["sheet_size"])),
                   metavar="WxH", help="size of the synthetic sheets "
                   f"({DEFAULTS['sheet_size'][0]}x{DEFAULTS['sheet_size'][1]})")
    p.add_argument("--model", default="smithsonian", help="model name (smithsonian)")
    p.add_argument("--seed", type=int, default=DEFAULTS["seed"])
    p.add_argument("--workers", type=int, default=None,
                   help="Dask worker processes (default: one thread per core)")
    return p


def run(args: argparse.Namespace) -> dict[str, Any]:
    from ..demo import DEFAULTS, SOUND_DEFAULTS, run_demo, run_sound_demo

    say = lambda line: print(line, file=sys.stderr, flush=True)  # noqa: E731
    if args.media == "sounds":
        n = SOUND_DEFAULTS["n"] if args.n is None else args.n
        if n < 20:
            raise UserError("-n must be at least 20 so that every split holds both classes")
        return run_sound_demo(args.output or "idigdask-demo-sounds", n=n,
                              epochs=SOUND_DEFAULTS["epochs"] if args.epochs is None else args.epochs,
                              seed=args.seed,
                              n_workers=args.workers, say=say)
    args.n = DEFAULTS["n"] if args.n is None else args.n
    args.epochs = DEFAULTS["epochs"] if args.epochs is None else args.epochs
    args.output = args.output or "idigdask-demo"
    if args.n < 20:
        raise UserError("-n must be at least 20 so that every split holds both classes")
    # --epochs, --model and --seed are checked by the training options (named as flags)
    # progress goes to stderr so that --json output stays clean on stdout
    try:
        width, height = (int(v) for v in args.sheet_size.lower().split("x"))
    except ValueError:
        raise UserError(f"--sheet-size {args.sheet_size!r}: expected WxH such as 1200x1800") from None
    if not (64 <= width <= 8000 and 64 <= height <= 8000):
        raise UserError(f"--sheet-size {args.sheet_size}: sides must be 64 to 8000 pixels")
    return run_demo(args.output, n=args.n, epochs=args.epochs, size=args.size,
                    sheet_size=(width, height),
                    model=args.model, seed=args.seed, n_workers=args.workers, say=say)
