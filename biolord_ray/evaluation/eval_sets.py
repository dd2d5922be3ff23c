"""Stage ``eval_sets``: the KG evaluation tasks, fixed once per run from the ingested KG.

* ``names/``: every name of every concept (concept_id, text, held_out, draw). A seeded
  fraction of the eligible synonyms is held out: they are the entity-linking queries and stay
  out of the name index and of the training pairs. The preferred name is never held out, so
  every concept keeps a name in the index.
* ``definitions/``: held-out definitions (concept_id, text, draw), one per chosen concept, for
  definition -> concept retrieval; they stay out of training too.
* ``hierarchy/``: sampled parent-child pairs (label 1) and as many random pairs (label 0).

Choices are made by a hash of (seed, concept, text) instead of a random generator, so they do
not depend on how Ray splits the data into blocks, and ``draw`` (that hash in [0, 1)) orders
the rows for the capped and fast subsets. Everything streams through Ray Data except the
hierarchy sample, which is capped before it reaches the driver.
"""

from __future__ import annotations

import logging

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from biolord_ray import stages
from biolord_ray.config import EvalConfig, PipelineConfig
from biolord_ray.keys import draw, normalise
from biolord_ray.kg.schema import IS_A
from biolord_ray.run_dir import RunDir, StageOutputs, read_parquet, run_stage, write_parquet
from biolord_ray.slices import per_slice
from biolord_ray.stage_outputs import english_concepts

log = logging.getLogger(__name__)

STAGE = stages.EVAL_SETS
# Part of the stage's identity: bump it when the way the sets are drawn changes, so existing
# run directories rebuild them.
SETS_VERSION = 2

NAMES_SCHEMA = pa.schema([("concept_id", pa.string()), ("text", pa.string()),
                          ("held_out", pa.bool_()), ("draw", pa.float64())])
DEFINITIONS_SCHEMA = pa.schema([("concept_id", pa.string()), ("text", pa.string()),
                                ("draw", pa.float64())])
EDGE_SCHEMA = pa.schema([("head_id", pa.string()), ("tail_id", pa.string()),
                         ("draw", pa.float64())])
HIERARCHY_SCHEMA = pa.schema([("id_1", pa.string()), ("id_2", pa.string()),
                              ("text_1", pa.string()), ("text_2", pa.string()),
                              ("label", pa.int8())])


def stage_settings(cfg: EvalConfig) -> dict:
    """The part of the config that decides this stage's output."""
    return {"version": SETS_VERSION, "holdout_fraction": cfg.holdout_fraction,
            "holdout_synonym_types": sorted(cfg.holdout_synonym_types),
            "seed": cfg.seed, "max_hierarchy_pairs": cfg.max_hierarchy_pairs}


def run(cfg: PipelineConfig, run_dir: RunDir, force: bool = False) -> dict:
    return run_stage(run_dir, STAGE, stage_settings(cfg.eval),
                     stages.input_identities(STAGE, cfg, run_dir),
                     lambda staging: _build(cfg.eval, run_dir, staging), force=force)


@per_slice
def split_names(batch: pa.Table, fraction: float, synonym_types: list[str],
                seed: int) -> pa.Table:
    """One row per distinct name of each concept, with the held-out synonyms marked."""
    rows = {name: [] for name in NAMES_SCHEMA.names}
    for concept_id, preferred, synonyms in zip(batch["concept_id"].to_pylist(),
                                               batch["preferred_name"].to_pylist(),
                                               batch["synonyms"].to_pylist(), strict=True):
        names = [(preferred, False)] + [(s["text"], s["type"] in synonym_types)
                                        for s in synonyms or []]
        seen = set()
        for text, eligible in names:
            key = normalise(text or "")
            if not key or key in seen:
                continue
            seen.add(key)
            value = draw(seed, concept_id, key)
            rows["concept_id"].append(concept_id)
            rows["text"].append(text.strip())
            rows["held_out"].append(eligible and value < fraction)
            rows["draw"].append(value)
    return pa.table(rows, schema=NAMES_SCHEMA)


@per_slice
def held_out_definitions(batch: pa.Table, fraction: float, seed: int) -> pa.Table:
    """The first definition of a seeded fraction of the concepts that have one."""
    rows = {name: [] for name in DEFINITIONS_SCHEMA.names}
    for concept_id, definitions in zip(batch["concept_id"].to_pylist(),
                                       batch["definitions"].to_pylist(), strict=True):
        texts = [d["text"].strip() for d in definitions or [] if (d["text"] or "").strip()]
        if not texts:
            continue
        value = draw(seed, concept_id, "\x00definition")
        if value < fraction:
            rows["concept_id"].append(concept_id)
            rows["text"].append(texts[0])
            rows["draw"].append(value)
    return pa.table(rows, schema=DEFINITIONS_SCHEMA)


def _is_a_edges(batch: pa.Table, seed: int, keep: int | None) -> pa.Table:
    """The block's is_a edges with their seeded draw; with ``keep``, only the ``keep`` lowest
    draws (the global lowest are among the union of every block's lowest)."""
    edges = batch.filter(pc.equal(batch["relation"], IS_A))
    draws = [draw(seed, h, t) for h, t in zip(edges["head_id"].to_pylist(),
                                              edges["tail_id"].to_pylist(), strict=True)]
    edges = pa.table([edges["head_id"], edges["tail_id"], pa.array(draws, pa.float64())],
                     schema=EDGE_SCHEMA)
    if keep is not None and edges.num_rows > keep:
        edges = edges.take(pc.select_k_unstable(edges, keep, [("draw", "ascending")]))
    return edges


def _build(cfg: EvalConfig, run_dir: RunDir, staging: str) -> StageOutputs:
    fs = run_dir.fs
    concepts = english_concepts(run_dir)
    names = concepts.map_batches(split_names, batch_format="pyarrow", fn_kwargs={
        "fraction": cfg.holdout_fraction, "synonym_types": cfg.holdout_synonym_types,
        "seed": cfg.seed})
    # A file per concepts file: the read, the pass and the write stay one task each.
    write_parquet(names, f"{staging}/names", fs, NAMES_SCHEMA, min_rows_per_file=None)
    definitions = concepts.map_batches(held_out_definitions, batch_format="pyarrow", fn_kwargs={
        "fraction": cfg.holdout_fraction, "seed": cfg.seed})
    write_parquet(definitions, f"{staging}/definitions", fs, DEFINITIONS_SCHEMA,
                  min_rows_per_file=None)

    hierarchy = _hierarchy_pairs(cfg, run_dir)
    fs.create_dir(f"{staging}/hierarchy")
    with fs.open_output_stream(f"{staging}/hierarchy/pairs.parquet") as f:
        pq.write_table(hierarchy, f)

    held_out = pq.read_table(f"{staging}/names", filesystem=fs, columns=["held_out"])["held_out"]
    n_held = pc.sum(held_out).as_py() or 0
    counts = {
        "index_names": len(held_out) - n_held,
        "held_out_synonyms": n_held,
        "held_out_definitions": pq.read_table(f"{staging}/definitions", filesystem=fs,
                                              columns=["draw"]).num_rows,
        "hierarchy_pairs": int(pc.sum(hierarchy["label"]).as_py() or 0),
    }
    log.info("eval_sets: %s", counts)
    return StageOutputs(outputs={"names": "names", "definitions": "definitions",
                                 "hierarchy": "hierarchy"}, counts=counts)


def _hierarchy_pairs(cfg: EvalConfig, run_dir: RunDir) -> pa.Table:
    """Up to ``max_hierarchy_pairs`` is_a pairs and as many random pairs.

    A random pair joins a sampled child with the parent of another sampled pair (a seeded
    permutation), so both classes draw their concepts from the same distribution: the AUC
    cannot be won by telling general "parent-like" names from specific ones.
    """
    import ray

    relations = read_parquet(run_dir.output(stages.INGEST_KG, "relations"), run_dir.fs) \
        .select_columns(["head_id", "relation", "tail_id"])
    # One pass: each block keeps its lowest draws, the driver the lowest of those (memory:
    # max_hierarchy_pairs rows per block).
    sampled = relations.map_batches(_is_a_edges, batch_format="pyarrow", fn_kwargs={
        "seed": cfg.seed, "keep": cfg.max_hierarchy_pairs}).to_arrow_refs()
    edges = pa.concat_tables(ray.get(sampled) or [EDGE_SCHEMA.empty_table()])
    edges = edges.sort_by("draw").slice(0, cfg.max_hierarchy_pairs)
    if edges.num_rows < 2:
        return HIERARCHY_SCHEMA.empty_table()
    heads, tails = edges["head_id"].to_pylist(), edges["tail_id"].to_pylist()
    known = set(zip(heads, tails, strict=True))
    permuted = np.random.default_rng(cfg.seed).permutation(len(tails))
    pairs = []
    for i, (head, tail) in enumerate(zip(heads, tails, strict=True)):
        pairs.append((head, tail, 1))
        other = tails[permuted[i]]
        if other != head and (head, other) not in known and (other, head) not in known:
            pairs.append((head, other, 0))
    ids = sorted({p[0] for p in pairs} | {p[1] for p in pairs})
    names = dict(_preferred_names(run_dir, ids))
    pairs = [p for p in pairs if p[0] in names and p[1] in names]
    return pa.table({"id_1": [p[0] for p in pairs], "id_2": [p[1] for p in pairs],
                     "text_1": [names[p[0]] for p in pairs],
                     "text_2": [names[p[1]] for p in pairs],
                     "label": [p[2] for p in pairs]}, schema=HIERARCHY_SCHEMA)


def _preferred_names(run_dir: RunDir, ids: list[str]) -> list[tuple[str, str]]:
    """The English preferred names of ``ids`` (a few hundred), read with a pushed-down
    filter: no Ray Data pass for them."""
    import pyarrow.dataset as pads

    found = pads.dataset(run_dir.output(stages.INGEST_KG, "concepts"), filesystem=run_dir.fs,
                         format="parquet").to_table(
        columns=["concept_id", "preferred_name"],
        filter=pc.field("concept_id").isin(pa.array(ids, pa.string()))
        & (pc.field("preferred_name_language") == "en"))
    return list(zip(found["concept_id"].to_pylist(), found["preferred_name"].to_pylist(),
                    strict=True))
