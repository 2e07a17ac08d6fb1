"""A multi-class task from specimen metadata, trained end to end: three plant families.

The synthetic generator's ``task="family"`` draws each sheet as one of three families
(broad-leaved Asteraceae herbs, Dryopteridaceae ferns with lobed pinnae,
Lycopodiaceae club-mosses with needle-like microphylls) and writes a specimen records
table; the labels come from that table's ``family`` through the media records'
specimen uuids, as they would from iDigBio's records.
"""

from __future__ import annotations

import pytest

pytest.importorskip("keras")

#: Held-out accuracy measured on this set (30 test specimens): 0.77-0.80 (six or eight
#: epochs); chance is 1/3, and 18 or more right of 30 by chance has a probability of
#: about 0.001.
MIN_ACCURACY = 0.6


def test_three_families_are_told_apart(tmp_path, dask_client):
    import idigdask
    from idigdask.synthetic import FAMILIES, make_sheets

    sheets = make_sheets(tmp_path / "sheets", n=200, size=(200, 300), stained_fraction=0.0,
                         seed=5, task="family")
    assert sorted(set(sheets.families)) == sorted(f for f, _, _ in FAMILIES)
    catalog = idigdask.attach_labels(idigdask.read_catalog(sheets.catalog), sheets.records,
                                     label="family")
    store = str(tmp_path / "families.zarr")
    built = idigdask.build_dataset(catalog, store, size=64, progress=False, client=dask_client)
    assert built.images == 200
    result = idigdask.train(store, str(tmp_path / "model"), epochs=8, batch_size=32,
                            learning_rate=1e-3, bn_momentum=0.9, patience=0, augment=False,
                            seed=0, verbose=0, client=dask_client)
    metrics = idigdask.evaluate(str(tmp_path / "model"), store, out=str(tmp_path / "report"),
                                client=dask_client)
    print(f"\nthree families, {metrics['n']} held-out sheets: accuracy {metrics['accuracy']:.3f}")
    assert result.classes == sorted(f for f, _, _ in FAMILIES)
    assert metrics["accuracy"] >= MIN_ACCURACY
