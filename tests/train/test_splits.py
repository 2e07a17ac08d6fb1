"""Specimen splits and class weights."""

from __future__ import annotations

import numpy as np
import pytest

from idigdask.errors import UserError
from idigdask.splits import class_weights, split_by_specimen


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


def test_split_rejects_bad_fractions():
    with pytest.raises(UserError, match="fractions"):
        split_by_specimen(["a"], [0], fractions=(0.5, -0.1, 0.6))


def test_class_weights_balance_the_classes():
    weights = class_weights([0, 0, 0, 1])
    assert weights == {0: pytest.approx(4 / 6), 1: pytest.approx(2.0)}
    assert 3 * weights[0] == pytest.approx(1 * weights[1])
