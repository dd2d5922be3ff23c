"""Grouping by key through files (buckets.map_by_key): every row of a key meets the others,
in every input, and what fails says so."""

import sys

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.fs as pafs
import pyarrow.parquet as pq
import pytest

from biolord_ray.buckets import Keyed, buckets_for_bytes, buckets_for_rows, map_by_key, with_bucket
from biolord_ray.kg.errors import KGFormatError

FS = pafs.LocalFileSystem()
LEFT = pa.schema([("id", pa.string()), ("value", pa.int64())])
RIGHT = pa.schema([("key", pa.string()), ("label", pa.string())])
OUT = pa.schema([("id", pa.string()), ("total", pa.int64()), ("labels", pa.int64())])
EXPECTED_BUCKETS = [3, 1, 3]


@pytest.fixture(scope="module", autouse=True)
def ray_session(ray_local):
    """Every test here runs Ray work: share the session's Ray instance (conftest). The
    functions given to map_by_key live here, a module Ray's workers cannot import: they
    travel by value."""
    from ray import cloudpickle

    cloudpickle.register_pickle_by_value(sys.modules[__name__])
    yield
    cloudpickle.unregister_pickle_by_value(sys.modules[__name__])


def totals(left: pa.Table, right: pa.Table) -> pa.Table:
    """Per id of ``left``: the sum of its values and how many ``right`` rows share its key."""
    sums = left.group_by("id").aggregate([("value", "sum")])
    labels = right.group_by("key").aggregate([("label", "count")])
    at = pc.index_in(sums["id"], value_set=labels["key"])
    return pa.table([sums["id"], sums["value_sum"],
                     pc.fill_null(labels["label_count"].take(at), 0)], schema=OUT)


def test_rows_of_a_key_meet_across_blocks_and_inputs(tmp_path, caplog):
    import logging

    import ray.data

    ids = [f"C{i % 37:03d}" for i in range(2000)]
    rows = pa.table({"id": ids, "value": list(range(2000))}, schema=LEFT)
    # One input given as two datasets, each id in both and in several blocks of each.
    left = [ray.data.from_arrow(rows.slice(start, 1000)).repartition(4) for start in (0, 1000)]
    right = ray.data.from_arrow(pa.table({"key": ["C001", "C001", "C002", "X"],
                                          "label": list("abcd")}, schema=RIGHT))
    out = str(tmp_path / "out")
    with caplog.at_level(logging.INFO, logger="biolord_ray.buckets"):
        map_by_key({"left": Keyed(left, "id", LEFT), "right": Keyed(right, "key", RIGHT)}, 5,
                   totals, out, FS, OUT)
    # The log counts the bucket files the writes made: at least one per bucket with rows.
    logged = [r.getMessage() for r in caplog.records if r.name == "biolord_ray.buckets"]
    assert len(logged) == 1 and ": 5 buckets, " in logged[0]
    assert int(logged[0].split(" buckets, ")[1].split(" files")[0]) >= 5
    result = pq.read_table(out).sort_by("id")
    assert result["id"].to_pylist() == sorted(set(ids))  # each id once: in one bucket only
    expected = {f"C{k:03d}": sum(i for i in range(2000) if i % 37 == k) for k in range(37)}
    assert dict(zip(result["id"].to_pylist(), result["total"].to_pylist(), strict=True)) == expected
    labels = dict(zip(result["id"].to_pylist(), result["labels"].to_pylist(), strict=True))
    assert (labels["C001"], labels["C002"], labels["C003"]) == (2, 1, 0)
    assert sorted(p.name for p in (tmp_path / "out").iterdir())[0].startswith("part-")
    assert not (tmp_path / "out.buckets").exists()  # the bucket files are removed


def test_the_bucket_of_a_key_is_the_same_in_every_process():
    table = pa.table({"id": ["C0011849", "C0030274", "C0011849"]})
    buckets = with_bucket(table, "id", 7)["hash_bucket"].to_pylist()
    assert buckets[0] == buckets[2] and all(0 <= b < 7 for b in buckets)
    # pandas' SipHash with its fixed key: these values were computed in another process
    # (Python's own string hash would differ between processes)
    assert buckets == EXPECTED_BUCKETS


def test_no_rows_leave_an_empty_file_with_the_schema_and_stale_output_goes(tmp_path):
    import ray.data

    out = tmp_path / "out"
    out.mkdir()
    pq.write_table(OUT.empty_table(), out / "part-09999.parquet")  # left by a stopped run
    empty = ray.data.from_arrow(LEFT.empty_table())
    map_by_key({"left": Keyed(empty, "id", LEFT), "right": Keyed(empty.rename_columns(
        {"id": "key", "value": "label"}), "key", RIGHT)}, 3, totals, str(out), FS, OUT)
    assert [p.name for p in out.iterdir()] == ["empty.parquet"]
    assert pq.read_table(out).schema == OUT


def test_an_error_of_the_function_reaches_the_caller_as_itself(tmp_path):
    import ray.data

    def refuse(left):
        raise KGFormatError("/data/MRCONSO.RRF", "concept C001 listed twice", 12)

    rows = ray.data.from_arrow(pa.table({"id": ["C001"], "value": [1]}, schema=LEFT))
    with pytest.raises(KGFormatError, match="MRCONSO.RRF, line 12: concept C001") as err:
        map_by_key({"left": Keyed(rows, "id", LEFT)}, 2, refuse, str(tmp_path / "out"), FS,
                   OUT)
    assert err.value.line == 12


def test_bucket_counts_grow_with_the_input_from_the_configured_minimum():
    assert buckets_for_bytes(0, 4) == 4 and buckets_for_rows(0, 4) == 4
    assert buckets_for_bytes(1_600 * 2**20, 4) == 50  # 1M UMLS concepts' release files
    assert buckets_for_rows(5_200_000, 4) == 52
