"""Pieces shared by the streaming readers (UMLS, SNOMED CT): delimited files read with Ray
Data, and concepts assembled from "facts" (one row per name, definition or semantic type).

Release files are tens of millions of rows, so nothing is collected on the driver: each file
is read as a stream of Arrow blocks, normalised into facts by ``map_batches``, and the facts
of one concept are brought together by Ray Data's ``groupby(...).map_groups``, which
shuffles through the object store (spilling to disk) instead of holding the graph in one
process.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from dataclasses import dataclass, field

import pyarrow as pa
import pyarrow.csv as pacsv

from biolord_ray.kg.errors import KGFormatError, find_lines, locate_bad_line
from biolord_ray.kg.schema import CONCEPT_SCHEMA

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
    """Stream a delimited release file as a Ray Dataset of string columns ``keep``.

    No quoting: RRF and RF2 fields may contain quotes, and neither format quotes fields.
    """
    import ray.data

    return ray.data.read_csv(
        path,
        read_options=pacsv.ReadOptions(column_names=columns, skip_rows=1 if header else 0),
        parse_options=pacsv.ParseOptions(delimiter=delimiter, quote_char=False,
                                         escape_char=False),
        convert_options=pacsv.ConvertOptions(
            column_types={c: pa.string() for c in columns}, include_columns=keep,
            strings_can_be_null=False, quoted_strings_can_be_null=False),
        file_extensions=None,
    )


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


def assemble_concepts(facts, concept_files: list[str] | None = None, num_partitions: int = 16):
    """Group facts by concept into rows of CONCEPT_SCHEMA.

    ``concept_files``: when set, a concept must have exactly one "concept" fact (it is
    listed, active, once in those files); concepts without one are dropped (their names
    belong to an inactive or filtered concept) and a duplicate is an error naming the file.
    """
    return facts.groupby("concept_id", num_partitions=num_partitions).map_groups(
        concept_from_facts, batch_format="pyarrow", fn_kwargs={"concept_files": concept_files})


def concept_from_facts(group: pa.Table, concept_files: list[str] | None = None) -> pa.Table:
    """One concept row from all facts of one concept (an empty table if it has no name)."""
    rows = group.to_pylist()
    concept_id = rows[0]["concept_id"]
    if concept_files is not None:
        listed = sum(1 for r in rows if r["kind"] == "concept")
        if listed > 1:
            found = [(path, line) for path in concept_files
                     for line in find_lines(path, [concept_id + "\t"])]
            where = ", ".join(f"{os.path.basename(path)} line {line}" for path, line in found)
            path, line = found[0] if found else (concept_files[0], None)
            raise KGFormatError(path, f"duplicate concept id {concept_id} ({where})", line)
        if listed == 0:
            return CONCEPT_SCHEMA.empty_table()
    names = sorted((r for r in rows if r["kind"] == "name"),
                   key=lambda r: (r["rank"], r["text"], r["language"], r["source"]))
    if not names:
        return CONCEPT_SCHEMA.empty_table()
    preferred = names[0]["text"]  # English whenever the concept has an English name
    # A name is one string in one language: "diabetes mellitus" is both Spanish and Dutch.
    synonyms, seen = [], {(preferred, names[0]["language"])}
    for r in names[1:]:
        if (r["text"], r["language"]) not in seen:
            seen.add((r["text"], r["language"]))
            synonyms.append({k: r[k] for k in ("text", "type", "language", "source")})
    definitions, seen_defs = [], set()
    for r in rows:
        if r["kind"] == "definition" and (r["text"], r["source"]) not in seen_defs:
            seen_defs.add((r["text"], r["source"]))
            definitions.append({"text": r["text"], "source": r["source"]})
    semantic_types = sorted({r["text"] for r in rows if r["kind"] == "semantic_type"})
    vocabularies = sorted({r["source"] for r in names})
    xrefs = sorted({r["text"] for r in rows if r["kind"] == "xref"})
    return pa.Table.from_pylist([{
        "concept_id": concept_id, "preferred_name": preferred,
        "preferred_name_language": names[0]["language"], "synonyms": synonyms,
        "definitions": definitions, "semantic_types": semantic_types,
        "source_vocabularies": vocabularies, "xrefs": xrefs,
    }], schema=CONCEPT_SCHEMA)


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
