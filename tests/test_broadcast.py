"""Broadcast lookups: the four join kinds against Ray Data's own hash join."""

import pyarrow as pa
import pytest

from biolord_ray.broadcast import lookup_join


def _rows(ds) -> list[dict]:
    return sorted(ds.take_all(), key=lambda r: (r["id"], r.get("text") or ""))


def test_lookup_join_matches_ray_data_join(ray_local):
    import ray.data

    left = pa.table({"id": ["a", "b", "c", "d", "a"], "text": ["x", "y", "z", "w", "v"]})
    right = pa.table({"key": ["a", "c", "e"], "name": ["A", "C", "E"]})
    ds = ray.data.from_arrow(left).repartition(2)
    for how in ("left_outer", "inner", "left_semi", "left_anti"):
        ours = lookup_join(ds, right, on=["id"], right_on=["key"], how=how)
        theirs = ds.join(ray.data.from_arrow(right), how, num_partitions=2, on=("id",),
                         right_on=("key",))
        expected = [{k: v for k, v in r.items() if k != "key"} for r in _rows(theirs)]
        assert _rows(ours) == expected, how


def test_lookup_join_on_two_columns_and_unique_keys(ray_local):
    import ray.data

    pairs = ray.data.from_arrow(pa.table({"id": ["a", "a", "b"], "text": ["x", "y", "x"]}))
    held = pa.table({"concept": ["a", "b"], "held": ["y", "y"]})
    kept = lookup_join(pairs, held, on=["id", "text"], right_on=["concept", "held"],
                       how="left_anti")
    assert [(r["id"], r["text"]) for r in _rows(kept)] == [("a", "x"), ("b", "x")]
    with pytest.raises(ValueError, match="repeat"):
        lookup_join(pairs, pa.table({"id": ["a", "a"], "v": [1, 2]}), on=["id"])
