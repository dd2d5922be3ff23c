"""The run directory: where every stage reads and writes, plus the manifest that records them.

A run directory is a local path or a URI (``s3://bucket/run``, ``gs://...``) resolved through
pyarrow's filesystems. Each stage builds its outputs in ``_staging/`` and publishes them to
``<stage>/`` only when it has finished, and the manifest is rewritten atomically; a later
stage reads only outputs that the manifest lists as complete, so a crash never leaves
half-written outputs where something would read them.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pyarrow.fs as pafs

from biolord_ray.config import config_hash

log = logging.getLogger(__name__)

MANIFEST = "manifest.json"


@dataclass
class StageOutputs:
    """What a stage's build function returns: output names -> paths relative to its folder."""

    outputs: dict[str, str]
    counts: dict[str, Any] = field(default_factory=dict)


class RunDir:
    def __init__(self, uri: str):
        if "://" not in uri:
            uri = os.path.abspath(os.path.expanduser(uri))
        self.uri = uri
        self.fs, self.root = pafs.FileSystem.from_uri(uri)
        self.fs.create_dir(self.root, recursive=True)

    def __repr__(self) -> str:
        return f"RunDir({self.uri!r})"

    def path(self, *parts: str) -> str:
        """A path inside the run directory, in the form ``self.fs`` expects."""
        return "/".join([self.root.rstrip("/"), *parts])

    def exists(self, *parts: str) -> bool:
        return self.fs.get_file_info(self.path(*parts)).type != pafs.FileType.NotFound

    # -- small files, written atomically ------------------------------------------------
    def read_json(self, *parts: str) -> Any:
        with self.fs.open_input_stream(self.path(*parts)) as f:
            return json.loads(f.read())

    def write_json(self, obj: Any, *parts: str) -> None:
        """Write then move: readers see the old file or the new one, never a partial one."""
        final = self.path(*parts)
        tmp = f"{final}.tmp-{uuid.uuid4().hex[:8]}"
        with self.fs.open_output_stream(tmp) as f:
            f.write(json.dumps(obj, indent=2, sort_keys=True, default=str).encode())
        self.fs.move(tmp, final)

    # -- manifest ------------------------------------------------------------------------
    def manifest(self) -> dict[str, Any]:
        return self.read_json(MANIFEST) if self.exists(MANIFEST) else {"stages": {}}

    def stage_record(self, stage: str) -> dict[str, Any] | None:
        return self.manifest()["stages"].get(stage)

    def _update_record(self, stage: str, record: dict[str, Any]) -> None:
        # Only the pipeline driver writes the manifest, so read-modify-write is safe.
        manifest = self.manifest()
        manifest["stages"][stage] = record
        self.write_json(manifest, MANIFEST)

    def completed(self, stage: str) -> dict[str, Any]:
        """The manifest record of a completed stage; a clear error if it has not completed."""
        record = self.stage_record(stage)
        if not record or record["status"] != "complete":
            state = record["status"] if record else "never run"
            raise FileNotFoundError(f"{self.uri}: stage '{stage}' is not complete ({state}); "
                                    f"run it first")
        return record

    def output(self, stage: str, name: str) -> str:
        """Path of a completed stage's output."""
        return self.path(stage, self.completed(stage)["outputs"][name])

    def stage_identity(self, stage: str) -> dict[str, Any]:
        """What a downstream stage records as its input: the upstream stage's config hash and
        completion time, so a rerun of the upstream stage makes the downstream one rerun."""
        record = self.completed(stage)
        return {"stage": stage, "config_hash": record["config_hash"],
                "finished_at": record["finished_at"]}


def fingerprint(uri_or_path: str) -> dict[str, Any]:
    """Cheap identity of an input: size and modification time of each file under it.

    Hashing contents would read tens of GB for a UMLS release; size and mtime change
    whenever a release file is replaced, which is what a rerun must notice.
    """
    if "://" not in uri_or_path:
        uri_or_path = os.path.abspath(os.path.expanduser(uri_or_path))
    fs, path = pafs.FileSystem.from_uri(uri_or_path)
    info = fs.get_file_info(path)
    if info.type == pafs.FileType.NotFound:
        raise FileNotFoundError(uri_or_path)
    infos = [info] if info.type == pafs.FileType.File else sorted(
        (i for i in fs.get_file_info(pafs.FileSelector(path, recursive=True))
         if i.type == pafs.FileType.File), key=lambda i: i.path)
    files = {os.path.relpath(i.path, path) if i.path != path else os.path.basename(path):
             [i.size, i.mtime_ns] for i in infos}
    return {"path": uri_or_path, "files": files}


def run_stage(
    run_dir: RunDir,
    stage: str,
    config: Any,
    inputs: dict[str, Any],
    build: Callable[[str], StageOutputs],
    force: bool = False,
) -> dict[str, Any]:
    """Run ``build`` unless the stage already completed for the same config and inputs.

    ``build(staging_dir)`` writes its outputs under ``staging_dir`` (a path on
    ``run_dir.fs``) and returns their names; they are then moved to ``<run_dir>/<stage>/``
    and the manifest records status, config hash, input fingerprints, outputs, timings and
    counts. Returns the manifest record.
    """
    wanted = {"config_hash": config_hash(config), "inputs": inputs}
    previous = run_dir.stage_record(stage)
    if not force and _is_complete(run_dir, stage, previous, wanted):
        log.info("stage %s: complete for this config and inputs, skipped", stage)
        return previous

    started = time.time()
    record = {**wanted, "status": "running", "started_at": _now()}
    run_dir._update_record(stage, record)
    staging = run_dir.path("_staging", f"{stage}-{uuid.uuid4().hex[:8]}")
    run_dir.fs.create_dir(staging, recursive=True)
    try:
        result = build(staging)
    except BaseException as err:
        run_dir._update_record(stage, {**record, "status": "failed", "error": repr(err)[:2000]})
        _delete_dir(run_dir.fs, staging)
        raise
    final = run_dir.path(stage)
    _delete_dir(run_dir.fs, final)
    run_dir.fs.move(staging, final)
    record.update(
        status="complete",
        outputs=result.outputs,
        counts=result.counts,
        finished_at=_now(),
        seconds=round(time.time() - started, 3),
    )
    run_dir._update_record(stage, record)
    return record


def _is_complete(run_dir: RunDir, stage: str, record: dict | None, wanted: dict) -> bool:
    if not record or record.get("status") != "complete":
        return False
    if any(record.get(k) != v for k, v in wanted.items()):
        return False
    return all(run_dir.exists(stage, rel) for rel in record["outputs"].values())


def write_parquet(ds, path: str, fs: pafs.FileSystem, schema,
                  min_rows_per_file: int | None = 100_000):
    """Write a Ray Dataset as Parquet; an empty dataset still leaves a file with the schema.
    ``min_rows_per_file=None``: a file per write task, for a dataset read a file per task
    (``read_parquet``): gathering rows for a file would stop the write fusing with the read."""
    import pyarrow.parquet as pq

    ds.write_parquet(path, filesystem=fs, min_rows_per_file=min_rows_per_file)
    if fs.get_file_info(path).type == pafs.FileType.NotFound:
        # Ray Data writes no file for an empty dataset; readers still need the schema.
        fs.create_dir(path)
        with fs.open_output_stream(f"{path}/empty.parquet") as f:
            pq.write_table(schema.empty_table(), f)


def read_parquet(path: str, fs: pafs.FileSystem, **options):
    """A Parquet folder a stage wrote, as a Ray Dataset read one file per task (a file holds
    at most about ``kg.rows_per_file`` rows, or one bucket: a task's memory is bounded, and a
    large KG has as many tasks as files).

    Left to itself, Ray Data asks for at least 200 blocks and splits each read task's output
    to get them, and a split read does not fuse with the maps after it: every block then goes
    through the object store, and waits there when the reads outrun the maps (at 3M UMLS
    concepts, 600 to 1,000 MiB of a stage's peak). Fused, on 1M UMLS concepts, prompt
    building took 41 s instead of 70 and build_pairs 49 s instead of 86 (the same hour).
    What follows such a read should keep it fused: no ``batch_size`` (``slices.per_slice``)
    and no ``min_rows_per_file`` on the write (each task writes its own file)."""
    import ray.data

    found = fs.get_file_info(pafs.FileSelector(path, recursive=True))
    files = sum(1 for info in found if info.path.endswith(".parquet"))
    return ray.data.read_parquet(path, filesystem=fs, **options,
                                 override_num_blocks=max(1, files))


def count_rows(path: str, fs: pafs.FileSystem, filter=None) -> int:
    """Rows of a Parquet output: from the files' footers (no data read), or, with ``filter``
    (a ``pyarrow.compute`` expression), reading only the columns it names. A Ray Data
    ``count()`` would start a whole execution for this."""
    import pyarrow.dataset as pads

    return pads.dataset(path, filesystem=fs, format="parquet").count_rows(filter=filter)


# Rows per shuffle partition when the input's size is known: partitions (and the memory of
# each reduce task and of each pass over a partition) stay this size as the KG grows.
ROWS_PER_PARTITION = 500_000


def shuffle_partitions(rows: int, minimum: int) -> int:
    """Partitions for a shuffle of ``rows`` rows: at least ``minimum`` (the config's), more
    as the input grows, ``ROWS_PER_PARTITION`` rows each."""
    return max(minimum, -(-rows // ROWS_PER_PARTITION))


def count_distinct(path: str, fs: pafs.FileSystem, column: str) -> int:
    """Distinct values of one column of a Parquet output, streamed batch by batch (memory:
    the distinct values, not the column)."""
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.dataset as pads

    seen, pending, waiting = pa.array([], pa.string()), [], 0
    for batch in pads.dataset(path, filesystem=fs, format="parquet").to_batches(
            columns=[column]):
        pending.append(pc.unique(batch[column]))
        waiting += len(pending[-1])
        if waiting > 2 * len(seen) + 1_000_000:  # compact now and then: linear overall
            seen = pc.unique(pa.chunked_array([seen, *pending]))
            pending, waiting = [], 0
    return len(pc.unique(pa.chunked_array([seen, *pending])))


def _delete_dir(fs: pafs.FileSystem, path: str) -> None:
    if fs.get_file_info(path).type != pafs.FileType.NotFound:
        fs.delete_dir(path)


def _now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
