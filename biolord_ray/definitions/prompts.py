"""Prompts from KG facts: each concept's name, synonyms, semantic types, parents and other
relations, verbalised into a chat prompt asking for a definition.

Facts are gathered with Ray Data (a broadcast lookup names each relation's target, a keyed
repartition brings each concept's facts together, a join takes them back to the concept), so
no process holds the whole graph, only a table of names;
the prompts are written to Parquet once per template and reused by every (re)run.
"""

from __future__ import annotations

import hashlib
import itertools
import json

import pyarrow as pa
import pyarrow.compute as pc

from biolord_ray.broadcast import lookup_join
from biolord_ray.config import DefinitionsConfig
from biolord_ray.definitions.selection import select_concepts
from biolord_ray.kg.schema import IS_A
from biolord_ray.run_dir import shuffle_partitions

PROMPT_SCHEMA = pa.schema([
    ("concept_id", pa.string()),
    ("preferred_name", pa.string()),
    ("has_definition", pa.bool_()),
    ("system_prompt", pa.string()),
    ("user_prompt", pa.string()),
    # The concept's own and related names: a valid definition mentions one of them.
    ("concept_terms", pa.list_(pa.string())),
])

BATCH_ROWS = 4096  # concepts per Python pass (build_prompts, training pairs)

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


def prompt_dataset(concepts, relations, cfg: DefinitionsConfig, num_partitions: int,
                   names: pa.Table | None = None):
    """Lazy Ray Dataset of prompts (PROMPT_SCHEMA) for the concepts ``cfg`` selects
    (``names``: see ``with_facts``)."""
    selected = select_concepts(candidate_concepts(concepts, cfg), cfg)
    joined = with_facts(selected, concepts, relations, cfg.max_parents, cfg.max_relations,
                        cfg.max_targets, num_partitions, names)
    # Bounded batches: a Python pass over a whole joined partition grows with the KG.
    return joined.map_batches(build_prompts, batch_size=BATCH_ROWS, batch_format="pyarrow",
                              fn_kwargs={"cfg": cfg})


def with_facts(selected, concepts, relations, max_parents: int, max_relations: int,
               max_targets: int, num_partitions: int, names: pa.Table | None = None):
    """``selected`` concepts with two more columns, ``relations`` and ``targets`` (their
    sorted, capped facts; see ``collect_facts``); target names come from ``names``
    (``concept_id``, ``preferred_name``; a stage reads them from its Parquet input), else
    from the ``concepts`` dataset.

    Target names are looked up in a broadcast table of names (one row per concept); the
    relations are then hash-partitioned by head, so each block holds every fact of its
    heads, and joined back to the selected concepts: two shuffles."""
    import ray

    n_relations = relations.count()
    if n_relations == 0:
        # Ray Data's hash join fails on an input without rows (it loses the schema); with no
        # relations there are no facts to gather anyway.
        return selected
    num_partitions = shuffle_partitions(n_relations, num_partitions)
    if names is None:
        names = pa.concat_tables(ray.get(concepts.select_columns(
            ["concept_id", "preferred_name"]).to_arrow_refs()))
    names = names.select(["concept_id", "preferred_name"]).rename_columns(
        ["tail_id", "tail_name"])
    facts = lookup_join(relations.select_columns(["head_id", "relation", "tail_id"]), names,
                        on=["tail_id"], how="inner") \
        .repartition(num_partitions, keys=["head_id"]) \
        .map_batches(collect_facts, batch_size=None, batch_format="pyarrow", fn_kwargs={
            "max_parents": max_parents, "max_relations": max_relations,
            "max_targets": max_targets})
    return selected.join(facts, "left_outer", num_partitions=num_partitions,
                         on=("concept_id",), right_on=("head_id",))
