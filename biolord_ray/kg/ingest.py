"""Stage ``ingest_kg``: any supported KG, or several (``kg.sources``) -> ``concepts/`` and
``relations/`` Parquet.

Every reader yields the same two tables (``schema.CONCEPT_SCHEMA``, ``RELATION_SCHEMA``).
Several sources are read one by one, their ids namespaced by source name and, with
``kg.merge_on``, concepts they say are the same merged (``merge.py``; the merged ids are
listed in ``merges/``). This stage then applies what is common to all formats, streaming
with Ray Data: the optional slice (first ``kg.max_concepts`` concept ids), de-duplication
of relations, and the removal of relations whose head or tail is not a kept concept
(counted as ``dangling_relations``, or ``relations_outside_slice``).
"""

from __future__ import annotations

import logging

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from biolord_ray import stages
from biolord_ray.buckets import Keyed, buckets_for_bytes, files_bytes, map_by_key
from biolord_ray.config import BUNDLED_KG_FORMATS, KGConfig, KGSource, PipelineConfig, to_dict
from biolord_ray.kg import merge, mondo, obo
from biolord_ray.kg.errors import KGFormatError
from biolord_ray.kg.schema import CONCEPT_SCHEMA, RELATION_SCHEMA, iso_languages
from biolord_ray.kg.tables import KGTables, located_read_errors
from biolord_ray.run_dir import (
    RunDir,
    StageOutputs,
    count_rows,
    fingerprint,
    read_parquet,
    run_stage,
    write_parquet,
)

log = logging.getLogger(__name__)

STAGE = stages.INGEST_KG


def run(cfg: PipelineConfig, run_dir: RunDir, force: bool = False) -> dict:
    """Ingest the configured KG into the run directory (skipped when already complete)."""
    return run_stage(run_dir, STAGE, stage_settings(cfg.kg), {"kg": kg_fingerprint(cfg.kg)},
                     lambda staging: _build(cfg.kg, run_dir, staging), force=force)


def stage_settings(cfg: KGConfig) -> dict:
    """The section as the manifest hashes it; a single-source KG leaves out the multi-source
    keys, so runs ingested before they existed stay complete."""
    settings = to_dict(cfg)
    if not cfg.sources and not cfg.merge_on:
        for key in ("name", "sources", "merge_on"):
            settings.pop(key)
    return settings


def kg_fingerprint(cfg: KGConfig) -> dict:
    sources = cfg.source_list()
    if len(sources) == 1:
        return source_fingerprint(sources[0])
    return {source.name: source_fingerprint(source) for source in sources}


def source_fingerprint(source: KGSource) -> dict:
    if source.format in BUNDLED_KG_FORMATS:
        ontology = source.format.upper()
        _, version = mondo.load_bundled(ontology)
        return {"bundled": f"cellxgene-ontology-guide {ontology}", "version": version}
    return fingerprint(source.path or obo.bundled_hpo_path())


def read_kg(cfg: KGConfig, work_dir: str, fs, num_partitions: int = 16) -> KGTables:
    """The KG in the shared schema, as Ray Datasets (several sources: namespaced ids; the
    merge is applied by the stage, which also writes what it merged). A release's concepts
    are assembled into ``work_dir`` (on ``fs``, storage every node reads) as it is read."""
    sources = cfg.source_list()
    if len(sources) == 1:
        return read_source(sources[0], work_dir, fs, num_partitions, cfg.merge_on)
    concepts, relations, counts, files = [], [], {}, []
    for source in sources:
        tables = read_source(source, f"{work_dir}/{source.name}", fs, num_partitions,
                             cfg.merge_on)
        if source.max_concepts is not None:
            tables.concepts = tables.concepts.sort("concept_id").limit(source.max_concepts)
        concepts.append(tables.concepts.map_batches(
            merge.namespace_concepts, batch_format="pyarrow", fn_kwargs={"name": source.name}))
        relations.append(tables.relations.map_batches(
            merge.namespace_relations, batch_format="pyarrow", fn_kwargs={"name": source.name}))
        counts.update({f"{source.name}.{key}": value for key, value in tables.counts.items()})
        files += tables.files
    return KGTables(concepts[0].union(*concepts[1:]), relations[0].union(*relations[1:]),
                    counts, files)


def read_source(source: KGSource, work_dir: str, fs, num_partitions: int = 16,
                xref_namespaces: list[str] = ()) -> KGTables:
    """One source in the shared schema, its ids as the source writes them."""
    import ray.data

    if source.format == "umls":
        from biolord_ray.kg import umls

        return umls.read(source, work_dir, fs, num_partitions=num_partitions,
                         xref_namespaces=xref_namespaces)
    if source.format == "snomed":
        from biolord_ray.kg import snomed

        return snomed.read(source, work_dir, fs, num_partitions=num_partitions)
    if source.format in BUNDLED_KG_FORMATS:
        ontology = source.format.upper()
        concepts, relations, counts = mondo.read_mondo(mondo.load_bundled(ontology)[0],
                                                       source=ontology)
    else:
        concepts, relations, counts = obo.read_obo(
            source.path or obo.bundled_hpo_path(), languages=iso_languages(source.languages))
    return KGTables(ray.data.from_arrow(concepts), ray.data.from_arrow(relations), counts)


def _build(cfg: KGConfig, run_dir: RunDir, staging: str) -> StageOutputs:
    fs = run_dir.fs
    work = f"{staging}/_work"
    tables = read_kg(cfg, f"{work}/concepts", fs, num_partitions=cfg.shuffle_partitions)
    counts = dict(tables.counts)
    with located_read_errors(tables.files):
        concepts, relations = tables.concepts, tables.relations
        if cfg.merge_on:
            formats = {s.name: s.format for s in cfg.source_list()}
            concepts, relations, merges, merge_counts = merge.merge_concepts(
                concepts, relations, formats, cfg.merge_on, cfg.shuffle_partitions)
            counts.update(merge_counts)
            fs.create_dir(f"{staging}/merges")
            with fs.open_output_stream(f"{staging}/merges/part-0.parquet") as f:
                pq.write_table(merges, f)
        if cfg.max_concepts is not None:
            concepts = concepts.sort("concept_id").limit(cfg.max_concepts)
        write_parquet(concepts, f"{staging}/concepts", fs, CONCEPT_SCHEMA, cfg.rows_per_file)
        # Relations are deduplicated (UMLS states one relation once per source vocabulary)
        # and written aside, marked whether their head is a kept concept; a second pass
        # keeps those whose tail is one too. Both through buckets of files (the relations
        # meet the kept ids of their heads, then of their tails): a broadcast of the ids
        # would put all of them in every worker, with look-up batches as large.
        buckets = buckets_for_bytes(files_bytes([path for path, *_ in tables.files]),
                                    cfg.shuffle_partitions)
        ids = Keyed(read_parquet(f"{staging}/concepts", fs, columns=["concept_id"]),
                    "concept_id", ID_SCHEMA)
        map_by_key({"relations": Keyed(relations, "head_id", RELATION_SCHEMA), "ids": ids},
                   buckets, dedupe_relations, f"{work}/relations", fs, MARKED_SCHEMA)

    n_concepts = count_rows(f"{staging}/concepts", fs)
    counts["concepts_without_english_name"] = n_concepts - count_rows(
        f"{staging}/concepts", fs, pc.field("preferred_name_language") == "en")
    if n_concepts == 0:
        raise KGFormatError(cfg.path or cfg.describe(), "no concepts were read (check "
                            "kg.languages and kg.vocabularies)")
    if len(cfg.source_list()) > 1:
        found = pq.read_table(f"{staging}/concepts", filesystem=fs, columns=["concept_id"])
        sources = pc.list_element(pc.split_pattern(found["concept_id"], ":", max_splits=1), 0)
        counts["concepts_by_source"] = {
            row["values"]: row["counts"]
            for row in pc.value_counts(sources.combine_chunks()).to_pylist()}
    n_all_relations = count_rows(f"{work}/relations", fs)
    map_by_key({"relations": Keyed(read_parquet(f"{work}/relations", fs), "tail_id",
                                   MARKED_SCHEMA), "ids": ids},
               buckets, kept_relations, f"{staging}/relations", fs, RELATION_SCHEMA)
    fs.delete_dir(work)
    n_relations = count_rows(f"{staging}/relations", fs)
    sliced = any(s.max_concepts is not None for s in [cfg, *cfg.sources])
    dropped = "relations_outside_slice" if sliced else "dangling_relations"
    counts.update(concepts=n_concepts, relations=n_relations,
                  **{dropped: n_all_relations - n_relations})
    log.info("ingest_kg: %s", counts)
    outputs = {"concepts": "concepts", "relations": "relations"}
    if cfg.merge_on:
        outputs["merges"] = "merges"
    return StageOutputs(outputs=outputs, counts=counts)


ID_SCHEMA = pa.schema([("concept_id", pa.string())])
MARKED_SCHEMA = RELATION_SCHEMA.append(pa.field("head_kept", pa.bool_()))


def dedupe_relations(relations: pa.Table, ids: pa.Table) -> pa.Table:
    """A bucket of head ids: each (head, relation, tail) once, with the first of its sources,
    and whether its head is one of the kept concepts' ``ids``."""
    deduped = relations.group_by(["head_id", "relation", "tail_id"]) \
        .aggregate([("source", "min")]).rename_columns(
            {"source_min": "source"}).select(RELATION_SCHEMA.names)
    return deduped.append_column("head_kept", pc.is_in(deduped["head_id"],
                                                       value_set=ids["concept_id"]))


def kept_relations(relations: pa.Table, ids: pa.Table) -> pa.Table:
    """A bucket of tail ids: the relations whose head and tail are both kept concepts."""
    kept = pc.and_(relations["head_kept"], pc.is_in(relations["tail_id"],
                                                    value_set=ids["concept_id"]))
    return relations.filter(kept).select(RELATION_SCHEMA.names)


def read_concepts(run_dir: RunDir) -> pa.Table:
    """The ingested concepts as one Arrow table (for small KGs and tests)."""
    return pq.read_table(run_dir.output(STAGE, "concepts"), filesystem=run_dir.fs,
                         schema=CONCEPT_SCHEMA)


def read_relations(run_dir: RunDir) -> pa.Table:
    return pq.read_table(run_dir.output(STAGE, "relations"), filesystem=run_dir.fs,
                         schema=RELATION_SCHEMA)
