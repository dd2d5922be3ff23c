"""Functions that run Python per row (per concept: names, definitions, prompts, pairs), over
a batch of any size, a slice at a time."""

from __future__ import annotations

import functools

import pyarrow as pa

# Rows per Python pass: the Python objects of one slice are what such a function holds.
BATCH_ROWS = 4096


def per_slice(fn):
    """``fn(batch, ...)`` applied to ``BATCH_ROWS`` rows of ``batch`` at a time, the results
    concatenated (in order).

    Written by hand because asking Ray Data for batches of that size (``batch_size``) stops
    it from fusing the map with the read before it: the read's blocks then wait in the object
    store for the slower Python pass (with the other unfused reads, 600 to 1,000 MiB of the
    object store at the data stages' 3M-concept peaks). Without a ``batch_size`` the map
    gets whole blocks (up to a Parquet file of ``kg.rows_per_file`` rows) in the read's own
    task."""

    @functools.wraps(fn)
    def sliced(batch: pa.Table, *args, **kwargs) -> pa.Table:
        if batch.num_rows <= BATCH_ROWS:
            return fn(batch, *args, **kwargs)
        return pa.concat_tables([fn(batch.slice(start, BATCH_ROWS), *args, **kwargs)
                                 for start in range(0, batch.num_rows, BATCH_ROWS)])

    return sliced
