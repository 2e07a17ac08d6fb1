"""The whole route on synthetic herbarium sheets, step by step, in Python.

Run: ``python examples/mercury_stains.py [OUT_DIR]`` (a few minutes on two cores).
"""

import sys
from pathlib import Path

import idigdask


def main(out: Path) -> None:
    # 1. sheets and a GUODA-schema media catalog pointing at them
    sheets = idigdask.make_sheets(out / "sheets", n=200, size=(1200, 1800), seed=1)

    # 2. the catalog, sampled as the GUODA notebook did, with labels by specimen
    catalog = idigdask.read_catalog(str(sheets.catalog))
    catalog = idigdask.attach_labels(catalog, str(sheets.labels), on="record_uuid",
                                     label="stained")

    # 3. the image store: fetched, decoded at reduced scale, resized, deduplicated
    result = idigdask.build_dataset(catalog, str(out / "sheets.zarr"), size=128)
    print("ledger:", result.counts["status"])
    ds = idigdask.open_dataset(str(out / "sheets.zarr"))
    print(ds)

    # 4. train the reference CNN, evaluate on held-out specimens, predict
    idigdask.train(str(out / "sheets.zarr"), label="label", model="smithsonian",
                   epochs=10, out=str(out / "model"))
    metrics = idigdask.evaluate(str(out / "model"), str(out / "sheets.zarr"),
                                out=str(out / "report"))
    print("held-out accuracy:", metrics["accuracy"])
    scores = idigdask.predict(str(out / "model"), str(out / "sheets.zarr"),
                              out=str(out / "predictions.parquet"))
    print(scores.head())


if __name__ == "__main__":
    main(Path(sys.argv[1] if len(sys.argv) > 1 else "mercury-example"))
