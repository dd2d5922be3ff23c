"""Stage ``build_pairs``: contrastive training pairs from the KG and the definitions.

For each concept, every name (preferred name and synonyms) is paired with

* each of its definitions: human ones (tagged with their vocabulary) and valid generated
  ones (tagged ``llm``), kind ``definition``;
* its KG description in the BioLORD-2022 style, kind ``description``: short sentences
  verbalised from its relations ("X is a kind of Y. X has finding site Z.").

Pairs are de-duplicated, capped per concept (a seeded choice), split into train and
validation **by concept** (no concept on both sides) and shuffled. The entity-linking
synonyms and definitions held out by ``eval_sets`` never become pairs.
"""

from __future__ import annotations

import logging

import pyarrow as pa
import pyarrow.compute as pc

from biolord_ray import keys, stages
from biolord_ray.broadcast import key_column, lookup_join
from biolord_ray.buckets import run_tasks
from biolord_ray.config import PipelineConfig
from biolord_ray.definitions.prompts import relation_label, with_facts
from biolord_ray.run_dir import (
    RunDir,
    StageOutputs,
    count_distinct,
    count_rows,
    read_parquet,
    run_stage,
    shuffle_partitions,
)
from biolord_ray.slices import per_slice
from biolord_ray.stage_outputs import (
    GENERATED_DEFINITION_SOURCE,
    SPLITS,
    english_concepts,
    read_definitions,
)

log = logging.getLogger(__name__)

STAGE = stages.BUILD_PAIRS

PAIR_SCHEMA = pa.schema([
    ("concept_id", pa.string()),
    ("anchor", pa.string()),     # a name of the concept
    ("positive", pa.string()),   # a definition or KG description of the same concept
    ("kind", pa.string()),       # "definition" or "description"
    ("source", pa.string()),     # the definition's vocabulary, "llm", or "kg"
])


# A pair with its anchor's normal form (keys.normalise), until held-out names are dropped.
KEYED_PAIR_SCHEMA = PAIR_SCHEMA.append(pa.field("anchor_key", pa.string()))
# A text evaluation holds out, and the pair column it must not be in: a name in its normal
# form ("anchor_key"), or a definition as written ("positive").
HELD_OUT_SCHEMA = pa.schema([("concept_id", pa.string()), ("text", pa.string()),
                             ("column", pa.string())])


def run(cfg: PipelineConfig, run_dir: RunDir, force: bool = False) -> dict:
    inputs = stages.input_identities(STAGE, cfg, run_dir)
    return run_stage(run_dir, STAGE, cfg.pairs, inputs,
                     lambda staging: _build(cfg, run_dir, staging), force=force)


def uses_generated_definitions(cfg: PipelineConfig, run_dir: RunDir) -> bool:
    return cfg.pairs.generated_definitions and \
        run_dir.stage_record(stages.GENERATE_DEFINITIONS) is not None


def description(name: str, relations: list[str], targets: list[str]) -> str:
    """BioLORD-2022-style KG description: one short sentence per relation type."""
    return " ".join(f"{name} {relation_label(r)} {t.replace('; ', ', ')}."
                    for r, t in zip(relations, targets, strict=True))


@per_slice
def make_pairs(batch: pa.Table, max_per_concept: int, seed: int,
               use_descriptions: bool) -> pa.Table:
    """Concept rows (with facts and generated definitions) -> capped, de-duplicated pairs."""
    rows = {name: [] for name in [*PAIR_SCHEMA.names, "anchor_key"]}
    columns = batch.to_pydict()
    for i, concept_id in enumerate(columns["concept_id"]):
        name = columns["preferred_name"][i]
        names = list(dict.fromkeys(
            [name] + [s["text"] for s in columns["synonyms"][i] or []
                      if s["type"] not in ("broad", "narrow", "related", "other_language")]))
        positives = [(d["text"], "definition", d["source"])
                     for d in columns["definitions"][i] or [] if (d["text"] or "").strip()]
        if columns.get("generated") and columns["generated"][i]:
            positives.append((columns["generated"][i], "definition", GENERATED_DEFINITION_SOURCE))
        relations = (columns.get("relations") or [None] * len(batch))[i]
        if use_descriptions and relations:
            positives.append((description(name, relations, columns["targets"][i]),
                              "description", "kg"))
        pairs = {(anchor.strip(), text.strip()): (kind, source) for anchor in names
                 for text, kind, source in positives}
        chosen = sorted(pairs, key=lambda p: keys.draw(seed, concept_id, *p))[:max_per_concept]
        for anchor, positive in chosen:
            kind, source = pairs[(anchor, positive)]
            for key, value in zip(PAIR_SCHEMA.names,
                                  (concept_id, anchor, positive, kind, source), strict=True):
                rows[key].append(value)
            rows["anchor_key"].append(keys.normalise(anchor))
    return pa.table(rows, schema=KEYED_PAIR_SCHEMA)


def _build(cfg: PipelineConfig, run_dir: RunDir, staging: str) -> StageOutputs:
    pcfg, fs, parts = cfg.pairs, run_dir.fs, cfg.kg.shuffle_partitions
    concepts = english_concepts(run_dir)
    relations = read_parquet(run_dir.output(stages.INGEST_KG, "relations"), fs)
    dcfg = cfg.definitions
    kg_concepts = run_dir.completed(stages.INGEST_KG)["counts"]["concepts"]
    rows = with_facts(concepts, relations, concepts, dcfg.max_parents, dcfg.max_relations,
                      dcfg.max_targets, f"{staging}/_facts", fs, parts, kg_concepts)
    if uses_generated_definitions(cfg, run_dir):
        # At most one per concept, and only for the concepts defined: broadcast.
        generated = read_definitions(run_dir, valid_only=not pcfg.keep_invalid_definitions) \
            .select(["concept_id", "definition"]).rename_columns(["concept_id", "generated"])
        if generated.num_rows:
            rows = lookup_join(rows, generated, on=["concept_id"], whole_blocks=True)
    pairs = rows.map_batches(make_pairs, batch_format="pyarrow", fn_kwargs={
        "max_per_concept": pcfg.max_pairs_per_concept, "seed": pcfg.seed,
        "use_descriptions": pcfg.descriptions})
    # Buckets of at most ROWS_PER_PARTITION pairs (what one shuffle task holds), counting the
    # most pairs every concept of the KG could give.
    buckets = shuffle_partitions(kg_concepts * pcfg.max_pairs_per_concept, 1)
    # The held-out texts go to the same split and bucket as their concept's pairs, and are
    # dropped bucket by bucket (write_shuffled_splits).
    split = {"fraction": pcfg.validation_fraction, "seed": pcfg.seed, "buckets": buckets}
    pairs, held_out = (ds.map_batches(with_split, batch_format="pyarrow", fn_kwargs=split)
                       for ds in (pairs, held_out_texts(run_dir)))
    write_shuffled_splits(pairs, held_out, staging, fs, pcfg.seed)
    fs.delete_dir(f"{staging}/_facts")
    counts = {}
    for name in SPLITS:
        counts[f"{name}_pairs"] = count_rows(f"{staging}/{name}", fs)
        counts[f"{name}_concepts"] = count_distinct(f"{staging}/{name}", fs, "concept_id")
    log.info("build_pairs: %s", counts)
    return StageOutputs(outputs={"train": "train", "validation": "validation"}, counts=counts)


def with_split(batch: pa.Table, fraction: float, seed: int, buckets: int) -> pa.Table:
    """Adds ``split``: "validation" for the pairs of a ``fraction`` of the concepts (drawn
    per concept: no concept on both sides), else "train"; and ``bucket``, a seeded draw of
    the concept among ``buckets``. One draw of each per concept of the batch, not per pair."""
    import numpy as np

    concepts = pc.unique(batch["concept_id"])
    names = concepts.to_pylist()
    held = pa.array([c for c in names if keys.draw(seed, c, "validation") < fraction],
                    pa.string())
    bucket_of = np.array([int(keys.draw(seed, c, "bucket") * buckets) for c in names],
                         dtype=np.int32)
    return batch.append_column("split", pc.if_else(
        pc.is_in(batch["concept_id"], value_set=held), "validation", "train")).append_column(
        "bucket", pa.array(bucket_of[pc.index_in(batch["concept_id"], concepts).to_numpy()]))


def write_shuffled_splits(pairs, held_out, staging: str, fs, seed: int) -> None:
    """Each split's pairs (rows of ``with_split``, KEYED_PAIR_SCHEMA) to ``staging/<split>/``
    in a seeded random order, without the ``held_out`` texts (rows of ``with_split``,
    HELD_OUT_SCHEMA), holding one bucket at a time: both are written by (split, bucket),
    then each bucket is read, its held-out texts dropped, shuffled and written by one task.

    Ray Data's ``random_shuffle`` is all-to-all, and at 1M UMLS concepts it held 2.3 GB of
    pairs in the object store; the held-out texts, broadcast, grew with the KG in every
    worker and in the driver, which read them (at 3M UMLS concepts the driver's peak in this
    stage fell from 570 to 250 MiB when they went through the buckets instead)."""
    import pyarrow.fs as pafs
    import pyarrow.parquet as pq

    everything = f"{staging}/_buckets"
    pairs.write_parquet(f"{everything}/pairs", filesystem=fs, partition_cols=["split", "bucket"])
    held_out.write_parquet(f"{everything}/held_out", filesystem=fs,
                           partition_cols=["split", "bucket"])
    calls = []
    for name in SPLITS:
        fs.create_dir(f"{staging}/{name}")
        found = fs.get_file_info(pafs.FileSelector(f"{everything}/pairs/split={name}",
                                                   allow_not_found=True))
        folders = sorted(f.path for f in found if f.type == pafs.FileType.Directory)
        if not folders:  # readers still need the schema
            pq.write_table(PAIR_SCHEMA.empty_table(), f"{staging}/{name}/empty.parquet",
                           filesystem=fs)
        calls += [(folder, folder.replace(f"{everything}/pairs/", f"{everything}/held_out/"),
                   f"{staging}/{name}/part-{i:05d}.parquet", fs, seed)
                  for i, folder in enumerate(folders)]
    run_tasks(_shuffle_bucket, calls)
    if fs.get_file_info(everything).type != pafs.FileType.NotFound:  # none if no pairs
        fs.delete_dir(everything)


def _shuffle_bucket(folder: str, held_out: str, out: str, fs, seed: int) -> None:
    import numpy as np
    import pyarrow.fs as pafs
    import pyarrow.parquet as pq

    rows = pq.read_table(folder, filesystem=fs, schema=KEYED_PAIR_SCHEMA)
    if fs.get_file_info(held_out).type != pafs.FileType.NotFound:
        rows = without_held_out(rows, pq.read_table(held_out, filesystem=fs,
                                                    schema=HELD_OUT_SCHEMA))
    rows = rows.select(PAIR_SCHEMA.names).sort_by(
        [("concept_id", "ascending"), ("anchor", "ascending"),
         ("positive", "ascending")])  # the same input order on every run
    order = np.random.default_rng([seed, int(folder.rsplit("=", 1)[1])]).permutation(len(rows))
    pq.write_table(rows.take(order), out, filesystem=fs)


def without_held_out(pairs: pa.Table, held_out: pa.Table) -> pa.Table:
    """Drop pairs whose anchor (in any case or word order) or positive is a text held out for
    evaluation of the same concept."""
    for column in ("anchor_key", "positive"):
        held = held_out.filter(pc.equal(held_out["column"], column))
        found = pc.is_in(key_column(pairs, ["concept_id", column]),
                         value_set=key_column(held, ["concept_id", "text"]))
        pairs = pairs.filter(pc.invert(found))
    return pairs


def held_out_texts(run_dir: RunDir):
    """The names (in their normal form) and definitions evaluation holds out, as one Ray
    Dataset of HELD_OUT_SCHEMA."""
    from ray.data.expressions import col

    fs = run_dir.fs
    names = read_parquet(run_dir.output(stages.EVAL_SETS, "names"), fs,
                         columns=["concept_id", "text", "held_out"]) \
        .filter(expr=col("held_out")).map_batches(_normal_forms, batch_format="pyarrow")
    definitions = read_parquet(run_dir.output(stages.EVAL_SETS, "definitions"), fs,
                               columns=["concept_id", "text"]) \
        .map_batches(_as_positives, batch_format="pyarrow")
    return names.union(definitions)


@per_slice
def _normal_forms(names: pa.Table) -> pa.Table:
    return pa.table([names["concept_id"], pa.array(
        [keys.normalise(text) for text in names["text"].to_pylist()], pa.string()),
        pa.array(["anchor_key"] * names.num_rows, pa.string())], schema=HELD_OUT_SCHEMA)


def _as_positives(definitions: pa.Table) -> pa.Table:
    return definitions.append_column("column", pa.array(["positive"] * definitions.num_rows,
                                                        pa.string()))
