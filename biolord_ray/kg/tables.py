"""Pieces shared by the streaming readers (UMLS, SNOMED CT): delimited files read with Ray
Data, and concepts assembled from "facts" (one row per name, definition or semantic type).

Release files are tens of millions of rows, so nothing is collected on the driver: each file
is read as a stream of Arrow blocks, normalised into facts by ``map_batches``, and the facts
of one concept are brought together in a bucket of files (``buckets.py``) and assembled
bucket by bucket with Arrow kernels, instead of holding the graph in one process.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from biolord_ray.buckets import Keyed, buckets_for_bytes, files_bytes, map_by_key
from biolord_ray.kg.errors import KGFormatError, find_lines, locate_bad_line
from biolord_ray.kg.schema import CONCEPT_SCHEMA, SYNONYM
from biolord_ray.run_dir import read_parquet

FACT_SCHEMA = pa.schema([
    ("concept_id", pa.string()),
    ("kind", pa.string()),       # "concept" (the id exists and is active), "name",
                                 # "definition", "semantic_type" or "xref" (text: a CURIE)
    ("text", pa.string()),
    ("type", pa.string()),       # synonym type for names (schema.SYNONYM_TYPES)
    ("language", pa.string()),
    ("source", pa.string()),
    ("rank", pa.int32()),        # names: lower is more preferred (0 = the preferred name)
])


@dataclass
class KGTables:
    """A reader's result: lazy Ray Datasets in the shared schema, plus skips it counted."""

    concepts: object  # ray.data.Dataset with schema.CONCEPT_SCHEMA
    relations: object  # ray.data.Dataset with schema.RELATION_SCHEMA
    counts: dict[str, int] = field(default_factory=dict)
    # (path, delimiter, n_fields, has_header) of every file read, to locate a bad line.
    files: list[tuple[str, str, int, bool]] = field(default_factory=list)


def read_delimited(path: str | list[str], columns: list[str], keep: list[str], delimiter: str,
                   header: bool):
    """Stream a delimited release file as a Ray Dataset of string columns ``keep``, one read
    task per byte range of it (``delimited.DelimitedRanges``).

    No quoting: RRF and RF2 fields may contain quotes, and neither format quotes fields.
    """
    import ray.data

    from biolord_ray.kg.delimited import DelimitedRanges

    source = DelimitedRanges([path] if isinstance(path, str) else list(path), columns, keep,
                             delimiter, header)
    # As many blocks as ranges: asking for more would make Ray Data split each task's output,
    # which keeps the read from fusing with the maps after it.
    return ray.data.read_datasource(source, override_num_blocks=len(source.ranges))


@contextlib.contextmanager
def located_read_errors(files: list[tuple[str, str, int, bool]]) -> Iterator[None]:
    """Turn a failure while executing a streaming read into an error naming file and line."""
    try:
        yield
    except KGFormatError:
        raise
    except Exception as err:
        for path, delimiter, n_fields, has_header in files:
            bad = locate_bad_line(path, delimiter, n_fields, skip_header=has_header)
            if bad is not None:
                raise bad from err
        cause = _kg_format_cause(err)
        if cause is not None:
            raise cause from err
        raise


def _kg_format_cause(err: BaseException) -> KGFormatError | None:
    """A KGFormatError raised inside a Ray task, unwrapped from the task error around it."""
    seen = set()
    while err is not None and id(err) not in seen:
        seen.add(id(err))
        if isinstance(err, KGFormatError):
            return err
        err = err.__cause__ or err.__context__ or getattr(err, "cause", None)
    return None


def assemble_concepts(facts, work_dir: str, fs, files: list[tuple[str, str, int, bool]],
                      concept_files: list[str] | None = None, minimum_buckets: int = 16):
    """Group facts (a Ray Dataset, or a list of them: one per release file) by concept into
    rows of CONCEPT_SCHEMA, written to ``work_dir`` now (a lazy dataset of them is returned).

    The facts are bucketed by concept id through files (``buckets.map_by_key``: every fact
    of a concept in one bucket, one bucket in memory per task, more buckets as the release
    files grow), and each bucket is assembled by ``concepts_from_facts`` with Arrow kernels.
    Written by hand because ``groupby().map_groups`` calls Python once per concept (about
    0.4 ms each: most of an ingest of UMLS's millions of concepts), and Ray Data's vectorised
    aggregations cannot build the ordered lists of structs a concept holds.

    ``files``: the release files read, as ``located_read_errors`` takes them (a bad line is
    reported by file and line). ``concept_files``: when set, a concept must have exactly one
    "concept" fact (it is listed, active, once in those files); concepts without one are
    dropped (their names belong to an inactive or filtered concept) and a duplicate is an
    error naming the file.
    """
    buckets = buckets_for_bytes(files_bytes([path for path, *_ in files]), minimum_buckets)
    with located_read_errors(files):
        map_by_key({"facts": Keyed(facts, "concept_id", FACT_SCHEMA)}, buckets,
                   concepts_from_facts, work_dir, fs, CONCEPT_SCHEMA,
                   {"concept_files": concept_files})
    return read_parquet(work_dir, fs, schema=CONCEPT_SCHEMA)


def concepts_from_facts(facts: pa.Table, concept_files: list[str] | None = None) -> pa.Table:
    """Concept rows from every fact of the concepts in ``facts`` (a concept without a name is
    dropped), sorted by concept id:

    * preferred name: the first name by (rank, text, language, source), English whenever the
      concept has an English name; synonyms: the other names in that order, each (text,
      language) once (a cognate, "diabetes mellitus" in Spanish and in Dutch, is two names);
    * definitions: each (text, source) once, in the order of the facts;
    * semantic types, source vocabularies (of all its names) and xrefs: sorted, distinct.
    """
    if facts.num_rows == 0:
        return CONCEPT_SCHEMA.empty_table()
    facts = facts.append_column("_row", pa.array(np.arange(facts.num_rows)))
    if concept_files is not None:
        listed = facts.filter(pc.equal(facts["kind"], "concept"))
        times = listed.group_by("concept_id").aggregate([("_row", "count")])
        repeated = times.filter(pc.greater(times["_row_count"], 1))["concept_id"]
        if len(repeated):
            raise _duplicate_concept(repeated[0].as_py(), concept_files)
        facts = facts.filter(pc.is_in(facts["concept_id"], value_set=listed["concept_id"]))

    names = _of_kind(facts, "name").sort_by(
        [("concept_id", "ascending"), ("rank", "ascending"), ("text", "ascending"),
         ("language", "ascending"), ("source", "ascending")])
    if names.num_rows == 0:
        return CONCEPT_SCHEMA.empty_table()
    names = names.set_column(names.schema.get_field_index("_row"), "_row",
                             pa.array(np.arange(names.num_rows)))  # the order above
    ids = names["concept_id"].combine_chunks()
    first = np.ones(len(ids), dtype=bool)
    first[1:] = pc.not_equal(ids[1:], ids[:-1]).to_numpy(zero_copy_only=False)
    preferred = names.filter(pa.array(first))
    concept_ids = preferred["concept_id"]
    distinct = _first_of(names, ["concept_id", "text", "language"])
    others = distinct.filter(pc.invert(pc.is_in(distinct["_row"], value_set=preferred["_row"])))
    synonyms = pc.make_struct(*(others[f.name] for f in SYNONYM),
                              field_names=[f.name for f in SYNONYM])
    definitions = _first_of(_of_kind(facts, "definition"), ["concept_id", "text", "source"])
    types, xrefs = (_distinct_sorted(_of_kind(facts, kind), "text")
                    for kind in ("semantic_type", "xref"))
    vocabularies = _distinct_sorted(names, "source")
    return pa.Table.from_arrays([
        concept_ids, preferred["text"], preferred["language"],
        _lists(concept_ids, others["concept_id"], synonyms),
        _lists(concept_ids, definitions["concept_id"], pc.make_struct(
            definitions["text"], definitions["source"], field_names=["text", "source"])),
        _lists(concept_ids, types["concept_id"], types["text"]),
        _lists(concept_ids, vocabularies["concept_id"], vocabularies["source"]),
        _lists(concept_ids, xrefs["concept_id"], xrefs["text"]),
    ], schema=CONCEPT_SCHEMA)


def _of_kind(facts: pa.Table, kind: str) -> pa.Table:
    return facts.filter(pc.equal(facts["kind"], kind))


def _first_of(table: pa.Table, keys: list[str]) -> pa.Table:
    """The first row (lowest ``_row``) of each distinct ``keys``, in ``_row`` order."""
    firsts = table.group_by(keys).aggregate([("_row", "min")])["_row_min"]
    return table.filter(pc.is_in(table["_row"], value_set=firsts)).sort_by("_row")


def _distinct_sorted(table: pa.Table, column: str) -> pa.Table:
    """Distinct (concept_id, ``column``) pairs sorted by both."""
    return table.group_by(["concept_id", column]).aggregate([]).sort_by(
        [("concept_id", "ascending"), (column, "ascending")])


def _lists(concept_ids: pa.Array, owners: pa.Array, values: pa.Array) -> pa.ListArray:
    """``values`` as one list per concept of ``concept_ids`` (sorted, distinct), in their
    order; ``owners`` says whose each value is (a concept outside ``concept_ids`` is
    dropped). Stable: values of one concept keep their relative order."""
    position = pc.index_in(owners, value_set=concept_ids)
    kept = pc.is_valid(position)
    position = position.filter(kept).to_numpy()
    values = values.filter(kept)
    if isinstance(values, pa.ChunkedArray):
        values = values.combine_chunks()
    order = np.argsort(position, kind="stable")
    counts = np.bincount(position, minlength=len(concept_ids))
    offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int32)
    return pa.ListArray.from_arrays(pa.array(offsets), values.take(pa.array(order)))


def _duplicate_concept(concept_id: str, concept_files: list[str]) -> KGFormatError:
    found = [(path, line) for path in concept_files
             for line in find_lines(path, [concept_id + "\t"])]
    where = ", ".join(f"{os.path.basename(path)} line {line}" for path, line in found)
    path, line = found[0] if found else (concept_files[0], None)
    return KGFormatError(path, f"duplicate concept id {concept_id} ({where})", line)


def facts_table(columns: dict[str, object]) -> pa.Table:
    """A FACT_SCHEMA table from column arrays (missing columns are filled with "")."""
    n = len(next(iter(columns.values())))
    arrays = []
    for f in FACT_SCHEMA:
        value = columns.get(f.name, "" if f.name != "rank" else 0)
        if isinstance(value, (str, int)):
            value = pa.array([value] * n, f.type)
        elif isinstance(value, pa.ChunkedArray):
            value = value.combine_chunks()
        arrays.append(value.cast(f.type) if isinstance(value, pa.Array)
                      else pa.array(value, f.type))
    return pa.Table.from_arrays(arrays, schema=FACT_SCHEMA)
