"""Group a dataset by key through files, holding one bucket at a time.

Every row goes to the bucket its key hashes to: Ray Data streams the dataset into one Parquet
folder per bucket (``write_parquet(partition_cols=...)``), then one Ray task per bucket reads
it whole and applies an Arrow function to it (every row of a key is in that bucket), writing
one output file. Written by hand because Ray Data's hash shuffle (``groupby``,
``repartition(keys=...)``, ``join``) keeps each partition in an aggregator actor until its
whole input has arrived: at 1M UMLS concepts those actors held 400 to 700 MiB each, growing
with the KG. Here the memory of a task is one bucket, and the number of buckets grows with
the input (``buckets_for_bytes``, ``buckets_for_rows``), so it is bounded by configuration,
not by the KG.

The folders and outputs must be on storage every node reads (the run directory).
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass

import pyarrow as pa
import pyarrow.fs as pafs

log = logging.getLogger(__name__)

BUCKET_COLUMN = "hash_bucket"
# What one bucket holds: input bytes (delimited text as read) or rows. A bucket task holds
# about this much data, a few times over while it sorts and groups; the KG's size sets how
# many buckets there are, never how large one is (from 100k UMLS concepts up, the minimum of
# buckets is already exceeded).
BUCKET_BYTES = 32 * 2**20
BUCKET_ROWS = 100_000


def buckets_for_bytes(input_bytes: int, minimum: int) -> int:
    """Buckets for an input of ``input_bytes``: at least ``minimum`` (the config's
    ``shuffle_partitions``), more as the input grows, ``BUCKET_BYTES`` each."""
    return max(minimum, -(-input_bytes // BUCKET_BYTES))


def buckets_for_rows(rows: int, minimum: int) -> int:
    return max(minimum, -(-rows // BUCKET_ROWS))


def files_bytes(paths: list[str]) -> int:
    return sum(os.path.getsize(p) for p in paths)


@dataclass(frozen=True)
class Keyed:
    """An input of ``map_by_key``: a Ray Dataset (or a list of them, one input), the column
    its rows are grouped by, and the schema of its rows (what the function is given when a
    bucket has none of them).

    A list is written into the buckets dataset by dataset: each read then fuses with the
    bucketing and the write after it, where a ``union`` would pass every block through the
    object store (they pile up there when the reads outrun the write)."""

    dataset: object
    key: str
    schema: pa.Schema


def with_bucket(batch: pa.Table, key: str, buckets: int) -> pa.Table:
    """``batch`` with ``BUCKET_COLUMN``: a hash of ``key`` modulo ``buckets``, the same in
    every process and run (pandas' SipHash with its fixed key, vectorised; Arrow has no hash
    kernel and Python's ``hash`` of a string differs between processes)."""
    import pandas as pd

    hashed = pd.util.hash_array(batch[key].to_numpy(zero_copy_only=False), categorize=False)
    return batch.append_column(BUCKET_COLUMN, pa.array((hashed % buckets).astype("int32")))


def map_by_key(inputs: dict[str, Keyed], buckets: int, fn, out: str, fs: pafs.FileSystem,
               schema: pa.Schema, fn_kwargs: dict | None = None) -> None:
    """Write ``fn(**{name: rows of the bucket, ...}, **fn_kwargs)`` for each bucket of the
    inputs' keys to ``out/part-<bucket>.parquet`` (``schema``; one empty file when no input
    has rows), replacing what ``out`` held. Every row of a key value is in the same bucket,
    in every input: ``fn`` may group one input or join several by key.

    An exception ``fn`` raises reaches the caller as itself."""
    import ray

    scratch = f"{out}.buckets"
    for stale in (scratch, out):  # left by a run that stopped part way
        if fs.get_file_info(stale).type != pafs.FileType.NotFound:
            fs.delete_dir(stale)
    folders: dict[int, dict[str, str]] = {}  # bucket -> input name -> its folder
    started = time.perf_counter()
    for name, keyed in inputs.items():
        datasets = keyed.dataset if isinstance(keyed.dataset, list) else [keyed.dataset]
        for dataset in datasets:  # appended to the same folders
            dataset.map_batches(with_bucket, batch_format="pyarrow",
                                fn_kwargs={"key": keyed.key, "buckets": buckets}) \
                .write_parquet(f"{scratch}/{name}", filesystem=fs,
                               partition_cols=[BUCKET_COLUMN])
        found = fs.get_file_info(pafs.FileSelector(f"{scratch}/{name}", allow_not_found=True))
        for info in found:
            if info.type == pafs.FileType.Directory:
                folders.setdefault(int(info.path.rsplit("=", 1)[1]), {})[name] = info.path
    written = time.perf_counter()
    fs.create_dir(out)
    schemas = {name: keyed.schema for name, keyed in inputs.items()}
    try:
        run_tasks(_map_bucket, [(found, schemas, f"{out}/part-{bucket:05d}.parquet", fs, fn,
                                 fn_kwargs or {}, schema)
                                for bucket, found in sorted(folders.items())])
    except ray.exceptions.RayTaskError as err:
        raise err.cause from None  # the caller's own error (e.g. a KGFormatError naming a file)
    if not folders:  # readers still need the schema
        import pyarrow.parquet as pq

        pq.write_table(schema.empty_table(), f"{out}/empty.parquet", filesystem=fs)
    if fs.get_file_info(scratch).type == pafs.FileType.NotFound:
        return
    if log.isEnabledFor(logging.INFO):  # the count lists every file: only when it is shown
        # Each write task writes a file into every bucket it has rows for: the number of
        # files is the product of the two, which the log shows at scale.
        files = sum(info.type == pafs.FileType.File for info in
                    fs.get_file_info(pafs.FileSelector(scratch, recursive=True)))
        log.info("%s: %d buckets, %d files written in %.1f s, bucket tasks %.1f s", out,
                 buckets, files, written - started, time.perf_counter() - written)
    fs.delete_dir(scratch)


def run_tasks(fn, calls: list[tuple]) -> None:
    """``fn(*args)`` for each ``args`` of ``calls``, each a Ray task of one CPU, as many in
    flight as the cluster has CPUs. A backlog of queued tasks makes Ray start worker
    processes beyond the CPUs (up to ``ray.max_idle_workers``), which then sit idle holding
    memory: at 1M UMLS concepts, 12 more processes and about 500 MiB."""
    import ray

    task = ray.remote(num_cpus=1)(fn)
    window = max(1, int(ray.cluster_resources().get("CPU", 1)))
    pending, running = list(calls), []
    while pending or running:
        while pending and len(running) < window:
            running.append(task.remote(*pending.pop(0)))
        done, running = ray.wait(running, num_returns=1)
        ray.get(done)


def _map_bucket(folders: dict[str, str], schemas: dict[str, pa.Schema], out: str,
                fs: pafs.FileSystem, fn, fn_kwargs: dict, schema: pa.Schema) -> None:
    import pyarrow.parquet as pq

    tables = {name: pq.read_table(folders[name], filesystem=fs, schema=input_schema)
              if name in folders else input_schema.empty_table()
              for name, input_schema in schemas.items()}
    pq.write_table(fn(**tables, **fn_kwargs).cast(schema), out, filesystem=fs)
