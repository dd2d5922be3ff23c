"""Stage ``ingest_kg``: any supported KG -> ``concepts/`` and ``relations/`` Parquet.

Every reader yields the same two tables (``schema.CONCEPT_SCHEMA``, ``RELATION_SCHEMA``);
this stage then applies what is common to all formats, streaming with Ray Data:
the optional slice (first ``kg.max_concepts`` concept ids), de-duplication of relations,
and the removal of relations whose head or tail is not a kept concept (counted as
``dangling_relations``, or ``relations_outside_slice``).
"""

from __future__ import annotations

import importlib
import logging

import pyarrow as pa
import pyarrow.parquet as pq

from biolord_ray.config import KGConfig, PipelineConfig
from biolord_ray.kg import mondo, obo
from biolord_ray.kg.errors import KGFormatError
from biolord_ray.kg.schema import CONCEPT_SCHEMA, RELATION_SCHEMA, iso_languages
from biolord_ray.kg.tables import KGTables, located_read_errors
from biolord_ray.run_dir import RunDir, StageOutputs, fingerprint, run_stage, write_parquet

log = logging.getLogger(__name__)

STAGE = "ingest_kg"


def run(cfg: PipelineConfig, run_dir: RunDir, force: bool = False) -> dict:
    """Ingest the configured KG into the run directory (skipped when already complete)."""
    return run_stage(run_dir, STAGE, cfg.kg, {"kg": kg_fingerprint(cfg.kg)},
                     lambda staging: _build(cfg.kg, run_dir, staging), force=force)


def kg_fingerprint(cfg: KGConfig) -> dict:
    if cfg.format == "mondo":
        _, version = mondo.load_bundled()
        return {"bundled": "cellxgene-ontology-guide MONDO", "version": version}
    return fingerprint(cfg.path or obo.bundled_hpo_path())


def read_kg(cfg: KGConfig, num_partitions: int = 16) -> KGTables:
    """The KG in the shared schema, as lazy Ray Datasets."""
    import ray.data

    if cfg.format in ("umls", "snomed"):
        reader = importlib.import_module(f"biolord_ray.kg.{cfg.format}")
        return reader.read(cfg, num_partitions=num_partitions)
    if cfg.format == "mondo":
        concepts, relations, counts = mondo.read_mondo(mondo.load_bundled()[0])
    else:
        concepts, relations, counts = obo.read_obo(
            cfg.path or obo.bundled_hpo_path(),
            languages=iso_languages(cfg.languages))
    return KGTables(ray.data.from_arrow(concepts), ray.data.from_arrow(relations), counts)


def _build(cfg: KGConfig, run_dir: RunDir, staging: str) -> StageOutputs:
    fs = run_dir.fs
    tables = read_kg(cfg, num_partitions=cfg.shuffle_partitions)
    counts = dict(tables.counts)
    with located_read_errors(tables.files):
        concepts = tables.concepts
        if cfg.max_concepts is not None:
            concepts = concepts.sort("concept_id").limit(cfg.max_concepts)
        write_parquet(concepts, f"{staging}/concepts", fs, CONCEPT_SCHEMA, cfg.rows_per_file)
        # Relations are deduplicated (UMLS states one relation once per source vocabulary)
        # and written aside before filtering, so their count costs no second read of MRREL.
        write_parquet(_dedupe_relations(tables.relations, cfg.shuffle_partitions),
                      f"{staging}/_all_relations", fs, RELATION_SCHEMA, cfg.rows_per_file)

    import ray.data
    from ray.data.expressions import col

    concepts = ray.data.read_parquet(f"{staging}/concepts", filesystem=fs)
    n_concepts = concepts.count()
    counts["concepts_without_english_name"] = n_concepts - concepts.filter(
        expr=col("preferred_name_language") == "en").count()  # left out of English phases
    if n_concepts == 0:
        raise KGFormatError(cfg.path or cfg.format, "no concepts were read (check kg.languages "
                            "and kg.vocabularies)")
    all_relations = ray.data.read_parquet(f"{staging}/_all_relations", filesystem=fs)
    n_all_relations = all_relations.count()
    ids = concepts.select_columns(["concept_id"])
    kept = all_relations
    for end in ("head_id", "tail_id"):
        kept = kept.join(ids, "left_semi", num_partitions=cfg.shuffle_partitions,
                         on=(end,), right_on=("concept_id",))
    # polars (behind Dataset.join) widens strings to large_string; keep the declared schema.
    write_parquet(kept.map_batches(_cast_relations, batch_format="pyarrow"),
                  f"{staging}/relations", fs, RELATION_SCHEMA, cfg.rows_per_file)
    fs.delete_dir(f"{staging}/_all_relations")
    n_relations = ray.data.read_parquet(f"{staging}/relations", filesystem=fs).count()
    dropped = "relations_outside_slice" if cfg.max_concepts is not None else "dangling_relations"
    counts.update(concepts=n_concepts, relations=n_relations,
                  **{dropped: n_all_relations - n_relations})
    log.info("ingest_kg: %s", counts)
    return StageOutputs(outputs={"concepts": "concepts", "relations": "relations"}, counts=counts)


def _dedupe_relations(relations, num_partitions: int):
    from ray.data.aggregate import Min

    return relations.groupby(["head_id", "relation", "tail_id"], num_partitions=num_partitions) \
        .aggregate(Min("source", alias_name="source"))


def _cast_relations(batch: pa.Table) -> pa.Table:
    return batch.select(RELATION_SCHEMA.names).cast(RELATION_SCHEMA)


def english_concepts(run_dir: RunDir):
    """The ingested concepts with an English name, as a Ray Dataset: what the English phases
    (definition prompts, training pairs, evaluation sets) read. A concept named only in other
    languages (kept by kg.languages for the multilingual student) has no English text."""
    import ray.data
    from ray.data.expressions import col

    concepts = ray.data.read_parquet(run_dir.output(STAGE, "concepts"), filesystem=run_dir.fs)
    return concepts.filter(expr=col("preferred_name_language") == "en")


def read_concepts(run_dir: RunDir) -> pa.Table:
    """The ingested concepts as one Arrow table (for small KGs and tests)."""
    return pq.read_table(run_dir.output(STAGE, "concepts"), filesystem=run_dir.fs,
                         schema=CONCEPT_SCHEMA)


def read_relations(run_dir: RunDir) -> pa.Table:
    return pq.read_table(run_dir.output(STAGE, "relations"), filesystem=run_dir.fs,
                         schema=RELATION_SCHEMA)
