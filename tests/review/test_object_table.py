"""An ObjectTable changes only through take_decided: one object's decided columns, from a fresh read."""

from __future__ import annotations

import numpy as np
import pytest

from midog_viewer.review.records import ObjectTable


def _table(ids, statuses):
    n = len(ids)
    return ObjectTable(
        id=np.array(ids, np.int64), kind=np.array(["detection"] * n, object), x1=np.zeros(n), y1=np.zeros(n),
        x2=np.ones(n), y2=np.ones(n), score=np.full(n, 0.9), label=np.array(["mitotic figure"] * n, object),
        status=np.array(statuses, object), source=np.array([""] * n, object), run_id=np.ones(n, np.int64),
    )


def test_take_decided_copies_the_decided_columns_of_the_same_object_only():
    mine = _table([1, 2], ["pending", "pending"])
    fresh = _table([2], ["accepted"])
    fresh.atypical[0], fresh.subtype_decided[0] = 1, True
    mine.take_decided(1, fresh, 0)
    assert list(mine.status) == ["pending", "accepted"] and mine.atypical[1] == 1 and mine.subtype_decided[1]
    assert mine.x2[1] == 1.0 and mine.score[1] == pytest.approx(0.9)  # geometry and score as they were
    with pytest.raises(ValueError, match="not the same object"):
        mine.take_decided(0, fresh, 0)
