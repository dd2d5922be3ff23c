"""Prompts from KG facts: each concept's name, synonyms, semantic types, parents and other
relations, verbalised into a chat prompt asking for a definition.

Facts are gathered with Ray Data and Ray tasks (a broadcast lookup names each relation's
target, then concepts and relations are bucketed by concept through files and joined bucket
by bucket), so no process holds the whole graph, only a table of names;
the prompts are written to Parquet once per template and reused by every (re)run.
"""

from __future__ import annotations

import hashlib
import itertools
import json

import pyarrow as pa
import pyarrow.compute as pc

from biolord_ray.buckets import Keyed, buckets_for_rows, map_by_key
from biolord_ray.config import DefinitionsConfig
from biolord_ray.definitions.selection import select_concepts
from biolord_ray.kg.schema import CONCEPT_SCHEMA, IS_A
from biolord_ray.run_dir import read_parquet
from biolord_ray.slices import per_slice

PROMPT_SCHEMA = pa.schema([
    ("concept_id", pa.string()),
    ("preferred_name", pa.string()),
    ("has_definition", pa.bool_()),
    ("system_prompt", pa.string()),
    ("user_prompt", pa.string()),
    # The concept's own and related names: a valid definition mentions one of them.
    ("concept_terms", pa.list_(pa.string())),
])


FACTS_SCHEMA = pa.schema([
    ("head_id", pa.string()),
    ("relations", pa.list_(pa.string())),   # relation names, sorted, is_a first
    ("targets", pa.list_(pa.string())),     # "; "-joined target names, one per relation
])


def template_hash(cfg: DefinitionsConfig) -> str:
    """Identity of everything that shapes a prompt; stored with each generated definition."""
    template = {key: getattr(cfg, key) for key in (
        "template_version", "system_prompt", "user_prompt", "max_synonyms", "max_parents",
        "max_relations", "max_targets")}
    return hashlib.sha256(json.dumps(template, sort_keys=True).encode()).hexdigest()[:12]


def relation_label(relation: str) -> str:
    return "is a kind of" if relation == IS_A else relation.replace("_", " ")


def collect_facts(group: pa.Table, max_parents: int, max_relations: int,
                  max_targets: int) -> pa.Table:
    """Relations with their target names (``head_id``, ``relation``, ``tail_name``), every row
    of a head in this table -> one row per head (FACTS_SCHEMA): sorted, capped fact lines.

    Python over the rows of a whole block (the heads sorted together), not a call per head:
    a Ray ``map_groups`` call per concept costs more than its facts."""
    group = group.sort_by("head_id")
    heads = group["head_id"].to_pylist()
    out = {"head_id": [], "relations": [], "targets": []}
    for head, rows in itertools.groupby(zip(heads, group["relation"].to_pylist(),
                                            group["tail_name"].to_pylist(), strict=True),
                                        key=lambda row: row[0]):
        by_relation: dict[str, set[str]] = {}
        for _, relation, target in rows:
            if target:
                by_relation.setdefault(relation, set()).add(target)
        if not by_relation:
            continue
        order = sorted(by_relation, key=lambda r: (r != IS_A, r))
        relations, targets = [], []
        for relation in order:
            if relation != IS_A and len(relations) - (IS_A in by_relation) >= max_relations:
                break
            cap = max_parents if relation == IS_A else max_targets
            relations.append(relation)
            targets.append("; ".join(sorted(by_relation[relation], key=str.casefold)[:cap]))
        out["head_id"].append(head)
        out["relations"].append(relations)
        out["targets"].append(targets)
    return pa.table(out, schema=FACTS_SCHEMA)


@per_slice
def build_prompts(batch: pa.Table, cfg: DefinitionsConfig) -> pa.Table:
    """Concept rows joined with their facts -> prompt rows (PROMPT_SCHEMA)."""
    rows = {name: [] for name in PROMPT_SCHEMA.names}
    columns = batch.to_pydict()
    for i, concept_id in enumerate(columns["concept_id"]):
        name = columns["preferred_name"][i]
        synonyms = [s["text"] for s in columns["synonyms"][i] or []
                    if s["type"] in ("exact", "abbreviation", "fully_specified")]
        synonyms = sorted(dict.fromkeys(synonyms), key=str.casefold)[:cfg.max_synonyms]
        lines = []
        if synonyms:
            lines.append(f"- also called: {'; '.join(synonyms)}")
        if columns["semantic_types"][i]:
            lines.append(f"- semantic type: {'; '.join(sorted(columns['semantic_types'][i]))}")
        relations = columns.get("relations", [None] * len(batch))[i] or []
        targets = columns.get("targets", [None] * len(batch))[i] or []
        for relation, target in zip(relations, targets, strict=True):
            lines.append(f"- {relation_label(relation)}: {target}")
        facts = "\n".join(lines) if lines else "- (no other facts known)"
        rows["concept_id"].append(concept_id)
        rows["preferred_name"].append(name)
        rows["has_definition"].append(bool(columns["definitions"][i]))
        rows["system_prompt"].append(cfg.system_prompt)
        rows["user_prompt"].append(cfg.user_prompt.format(name=name, facts=facts))
        rows["concept_terms"].append([name, *synonyms,
                                      *(t for target in targets for t in target.split("; "))])
    return pa.table(rows, schema=PROMPT_SCHEMA)


def candidate_concepts(concepts, cfg: DefinitionsConfig):
    """The concepts ``cfg`` may define, before the cap (``selection.select_concepts``)."""
    return concepts.map_batches(_without_definition, batch_format="pyarrow") \
        if cfg.only_missing else concepts


def _without_definition(batch: pa.Table) -> pa.Table:
    lengths = pc.fill_null(pc.list_value_length(batch["definitions"]), 0)
    return batch.filter(pc.equal(lengths, 0))


def prompt_dataset(concepts, relations, cfg: DefinitionsConfig, work_dir: str, fs,
                   minimum_buckets: int, concept_rows: int | None = None):
    """Ray Dataset of prompts (PROMPT_SCHEMA) for the concepts ``cfg`` selects, their facts
    gathered now into ``work_dir`` (``with_facts``; the targets named from ``concepts``, of
    which there are ``concept_rows``, or at most that many: counted when not given)."""
    selected = select_concepts(candidate_concepts(concepts, cfg), cfg)
    joined = with_facts(selected, relations, concepts, cfg.max_parents, cfg.max_relations,
                        cfg.max_targets, work_dir, fs, minimum_buckets, concept_rows)
    return joined.map_batches(build_prompts, batch_format="pyarrow", fn_kwargs={"cfg": cfg})


RELATION_TARGET_SCHEMA = pa.schema([("head_id", pa.string()), ("relation", pa.string()),
                                    ("tail_id", pa.string())])
NAME_SCHEMA = pa.schema([("concept_id", pa.string()), ("preferred_name", pa.string())])
NAMED_RELATION_SCHEMA = pa.schema([("head_id", pa.string()), ("relation", pa.string()),
                                   ("tail_name", pa.string())])
WITH_FACTS_SCHEMA = CONCEPT_SCHEMA.append(FACTS_SCHEMA.field("relations")) \
    .append(FACTS_SCHEMA.field("targets"))


def with_facts(selected, relations, names, max_parents: int, max_relations: int,
               max_targets: int, work_dir: str, fs, minimum_buckets: int,
               name_rows: int | None = None):
    """``selected`` concepts with two more columns, ``relations`` and ``targets`` (their
    sorted, capped facts, null without any; see ``collect_facts``), written to ``work_dir``
    now and returned as a Ray Dataset reading them. Target names come from ``names`` (a Ray
    Dataset with ``concept_id`` and ``preferred_name``, one row per concept: ``name_rows``
    of them, or at most that many; counted when not given).

    Two passes through buckets of files (``buckets.map_by_key``): the relations meet their
    targets' names in buckets of target ids, then the named relations meet their heads in
    buckets of concept ids, where each bucket's facts are collected and joined to its
    concepts with Arrow. One bucket in memory per task: the names are not broadcast (every
    worker would hold all of them, and look-up batches as large, growing with the KG), nor
    joined by Ray Data's hash join (its aggregator actors hold partitions growing with it)."""
    relation_rows = relations.count()
    name_rows = names.count() if name_rows is None else name_rows
    buckets = buckets_for_rows(relation_rows + name_rows, minimum_buckets)
    named = f"{work_dir}.named"
    map_by_key({"relations": Keyed(relations.select_columns(RELATION_TARGET_SCHEMA.names),
                                   "tail_id", RELATION_TARGET_SCHEMA),
                "names": Keyed(names.select_columns(NAME_SCHEMA.names), "concept_id",
                               NAME_SCHEMA)},
               buckets, _name_targets, named, fs, NAMED_RELATION_SCHEMA)
    map_by_key({"concepts": Keyed(selected, "concept_id", CONCEPT_SCHEMA),
                "relations": Keyed(read_parquet(named, fs, schema=NAMED_RELATION_SCHEMA),
                                   "head_id", NAMED_RELATION_SCHEMA)},
               buckets, _join_facts, work_dir, fs, WITH_FACTS_SCHEMA, {
                   "max_parents": max_parents, "max_relations": max_relations,
                   "max_targets": max_targets})
    fs.delete_dir(named)
    return read_parquet(work_dir, fs, schema=WITH_FACTS_SCHEMA)


def _name_targets(relations: pa.Table, names: pa.Table) -> pa.Table:
    """One bucket of target ids: its relations with their target's name; a relation whose
    target has none (not in ``names``: outside the KG or without an English name) is
    dropped."""
    at = pc.index_in(relations["tail_id"], value_set=names["concept_id"])
    named = pc.is_valid(at)
    return pa.table([relations["head_id"].filter(named), relations["relation"].filter(named),
                     names["preferred_name"].take(at.filter(named))],
                    schema=NAMED_RELATION_SCHEMA)


def _join_facts(concepts: pa.Table, relations: pa.Table, **caps) -> pa.Table:
    """One bucket: the facts of its heads, each concept's row of them appended (a lookup by
    index, since Arrow's hash join cannot carry list columns)."""
    facts = collect_facts(relations, **caps)
    at = pc.index_in(concepts["concept_id"], value_set=facts["head_id"])
    return concepts.append_column("relations", facts["relations"].take(at)) \
        .append_column("targets", facts["targets"].take(at))
