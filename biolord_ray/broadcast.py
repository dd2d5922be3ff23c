"""Joins against a small table by broadcasting it, instead of shuffling both sides.

Ray Data's ``Dataset.join`` (and ``groupby``) hash-partitions both inputs: right at any size,
but each join moves both sides, and on a small machine it cost 5 to 7 s whatever the data
until idle workers were kept (``runtime.small_node_system_config``). When one side is small
(generated definitions, held-out texts, concept ids already done, concept names), it is
enough to put it in the object store once and look each block's keys up in it with Arrow
kernels: one map, no shuffle. Ray Data has no broadcast join
(2.60), hence this module.

The small side must fit in each worker's memory: it is one row per concept at most in this
pipeline (a few short strings: about 40 MB per million concepts).

Each lookup call hashes the whole small side (Arrow's ``index_in`` builds its set per call):
with one call per block, as many blocks as the KG has rows times a set as large as the KG made
the join quadratic (300k concepts: 85 ms of hashing per 19k-row block). Batches of at least as
many rows as the small side make the hashing cost no more than the look-ups, so the cost per
row stays flat as the KG grows; a batch is then about as large as the table every worker
already holds.
"""

from __future__ import annotations

import pyarrow as pa
import pyarrow.compute as pc

HOWS = ("left_outer", "inner", "left_semi", "left_anti")
_SEPARATOR = "\x1f"  # joins multi-column keys; never inside an id or a name
MIN_BATCH_ROWS = 65_536  # rows per lookup call when the small side is smaller than this


def lookup_join(ds, table: pa.Table, on: list[str] | tuple[str, ...],
                right_on: list[str] | tuple[str, ...] | None = None, how: str = "left_outer",
                whole_blocks: bool = False):
    """``ds`` joined with the in-memory ``table`` on ``on`` = ``right_on`` (string columns).

    ``left_outer``/``inner`` add ``table``'s other columns (nulls where none matches) and need
    its keys to be unique; ``left_semi``/``left_anti`` keep or drop ``ds``'s rows whose key
    is in ``table``. Row order within a block is kept.

    ``whole_blocks``: look each block up whole, for a dataset read a file per task
    (``run_dir.read_parquet``: its blocks are large already); asking for batches would stop
    Ray Data from fusing the look-up with the read."""
    if how not in HOWS:
        raise ValueError(f"how must be one of {HOWS}, not {how!r}")
    right_on = list(right_on or on)
    if len(right_on) != len(on):
        raise ValueError(f"{list(on)} and {right_on}: as many keys on both sides")
    keys = key_column(table, right_on)
    if how in ("left_outer", "inner") and pc.count_distinct(keys).as_py() != len(keys):
        raise ValueError(f"lookup_join: the keys {right_on} of the broadcast side repeat")
    extra = table.drop_columns(right_on) if how in ("left_outer", "inner") else None
    return ds.map_batches(_lookup, batch_size=None if whole_blocks
                          else max(len(table), MIN_BATCH_ROWS),
                          batch_format="pyarrow", zero_copy_batch=True,
                          fn_kwargs={"keys": keys.combine_chunks(), "extra": extra,
                                     "on": list(on), "how": how})


def key_column(table: pa.Table, columns: list[str]) -> pa.ChunkedArray | pa.Array:
    """The values of ``columns`` joined into one string key per row."""
    if len(columns) == 1:
        return table[columns[0]]
    return pc.binary_join_element_wise(*(table[c] for c in columns), _SEPARATOR)


def _lookup(batch: pa.Table, keys: pa.Array, extra: pa.Table | None, on: list[str],
            how: str) -> pa.Table:
    where = pc.index_in(key_column(batch, on), value_set=keys)
    if how == "left_semi":
        return batch.filter(pc.is_valid(where))
    if how == "left_anti":
        return batch.filter(pc.is_null(where))
    if how == "inner":
        batch, where = batch.filter(pc.is_valid(where)), where.filter(pc.is_valid(where))
    found = extra.take(where)  # a null index gives a null row
    for name in found.column_names:
        batch = batch.append_column(name, found[name])
    return batch
