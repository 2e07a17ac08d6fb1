"""Specimen and recordset splits, and class weights."""

from __future__ import annotations

import numpy as np
import pytest

from idigdask.errors import UserError
from idigdask.splits import class_weights, split_by_recordset, split_by_specimen


# --- split --------------------------------------------------------------------------
def test_split_keeps_specimens_together_and_stratifies():
    records = np.array([f"r{i // 3}" for i in range(300)], dtype=object)
    labels = np.array([(i // 3) % 2 for i in range(300)])
    records[::17] = ""  # sheets without a specimen are groups of their own
    media = np.array([f"m{i}" for i in range(300)])
    split = split_by_specimen(records, labels, seed=5, media_uuid=media)
    assert set(split) == {"train", "val", "test"}
    for record in set(records) - {""}:
        assert len(set(split[records == record])) == 1, record
    for label in (0, 1):
        share = {s: np.mean(split[labels == label] == s) for s in ("train", "val", "test")}
        assert share["train"] == pytest.approx(0.7, abs=0.08)
        assert share["test"] == pytest.approx(0.15, abs=0.06)
    again = split_by_specimen(records, labels, seed=5, media_uuid=media)
    assert (again == split).all()
    other = split_by_specimen(records, labels, seed=6, media_uuid=media)
    assert (other != split).any()


def test_split_by_recordset_holds_providers_out():
    sizes = [50, 10, 30, 80, 5, 40, 20, 20, 60, 15]
    recordsets = np.repeat([f"rs{i}" for i in range(len(sizes))], sizes).astype(object)
    recordsets[:7] = None                     # images without a recordset: one group
    split = split_by_recordset(recordsets, seed=3)
    assert set(split) == {"train", "val", "test"}
    groups = np.where(recordsets == None, "", recordsets).astype(str)  # noqa: E711
    for name in set(groups):
        assert len(set(split[groups == name])) == 1, name
    assert np.mean(split == "train") == pytest.approx(0.7, abs=0.15)
    assert (split_by_recordset(recordsets, seed=3) == split).all()
    # no more recordsets than splits to fill: every split gets one
    assert sorted(split_by_recordset(["a", "b", "c"])) == ["test", "train", "val"]
    with pytest.raises(UserError, match="at least 3 recordsets"):
        split_by_recordset(["a", "a", "b"])
    assert set(split_by_recordset(["a", "b"], fractions=(0.8, 0.2, 0))) == {"train", "val"}


def test_split_rejects_bad_fractions():
    with pytest.raises(UserError, match="fractions"):
        split_by_specimen(["a"], [0], fractions=(0.5, -0.1, 0.6))


def test_class_weights_balance_the_classes():
    weights = class_weights([0, 0, 0, 1])
    assert weights == {0: pytest.approx(4 / 6), 1: pytest.approx(2.0)}
    assert 3 * weights[0] == pytest.approx(1 * weights[1])
