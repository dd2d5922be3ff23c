"""Stage ``parallel_data``: English text paired with its translations, with the English
teacher's embedding of the English side (the training data of BioLORD-2023-M).

Sources (config section ``multilingual``):

* the ingested KG (``from_kg``): each concept's preferred (English) name with each of its
  names in one of ``languages`` (UMLS MRCONSO rows of other LATs, SNOMED CT extension
  descriptions, OBO synonyms tagged {lang="xx"}, kept at ingest by ``kg.languages``);
* parallel files (``files``): TSV with a header row, or Parquet, with columns ``source``
  (English), ``target`` (its translation), ``language`` (ISO 639-1) and optionally
  ``concept_id``. A file without one of the required columns is an error naming the file.

A pair with an empty side, in a language outside ``languages``, or of a concept without an
English name is quarantined (``quarantine/``, with its origin and reason) and counted by
reason. Concepts (English sources, for rows without a concept id) are split by a seeded
hash: ``validation_fraction`` of them are held out for the translation evaluation (suite
"translation").

Output rows (``row_schema``) per split: each pair twice, once as its English text and once
as its translation, both with the teacher's embedding of the English text as ``target``:
the student regresses both onto it (sentence-transformers' make-multilingual recipe).
Ray Data end to end: read -> clean -> teacher encoder actors (``map_batches``) -> Parquet.
"""

from __future__ import annotations

import logging
import os

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from biolord_ray import stages
from biolord_ray.config import PipelineConfig
from biolord_ray.keys import draw
from biolord_ray.run_dir import RunDir, StageOutputs, fingerprint, run_stage, write_parquet
from biolord_ray.stage_outputs import SPLITS, multilingual_teacher_dir

log = logging.getLogger(__name__)

STAGE = stages.PARALLEL_DATA
REQUIRED_COLUMNS = ("source", "target", "language")

PAIR_SCHEMA = pa.schema([
    ("concept_id", pa.string()),   # null when a parallel file has none
    ("language", pa.string()),
    ("source", pa.string()),       # English
    ("target", pa.string()),       # its translation
    ("origin", pa.string()),       # "kg" or the parallel file's path
    ("reason", pa.string()),       # why the pair is quarantined; "" when it is kept
])


def row_schema(dim: int) -> pa.Schema:
    return pa.schema([
        ("concept_id", pa.string()),
        ("language", pa.string()),
        ("english", pa.string()),                 # the pair's English text
        ("text", pa.string()),                    # the text the student embeds
        ("kind", pa.string()),                    # "english" or "translation"
        ("target", pa.list_(pa.float32(), dim)),  # the teacher's embedding of ``english``
    ])


def run(cfg: PipelineConfig, run_dir: RunDir, force: bool = False) -> dict:
    mcfg = cfg.multilingual
    inputs = {"files": [fingerprint(path) for path in mcfg.files],
              **stages.input_identities(STAGE, cfg, run_dir)}
    settings = {k: v for k, v in vars(mcfg).items() if k not in ("enabled", "train")}
    return run_stage(run_dir, STAGE, settings, inputs,
                     lambda staging: _build(cfg, run_dir, staging), force=force)


def _build(cfg: PipelineConfig, run_dir: RunDir, staging: str) -> StageOutputs:
    import ray.data
    from ray.data.expressions import col

    from biolord_ray.models.encode import ENCODER_CALL_TEXTS, encoder_pool

    mcfg, fs = cfg.multilingual, run_dir.fs
    sources = []
    if mcfg.from_kg:
        concepts = ray.data.read_parquet(run_dir.output(stages.INGEST_KG, "concepts"),
                                         filesystem=fs)
        sources.append(concepts.map_batches(kg_pairs, batch_format="pyarrow",
                                            fn_kwargs={"languages": mcfg.languages}))
    sources += [read_parallel_file(path).map_batches(
        file_pairs, batch_format="pyarrow", fn_kwargs={"languages": mcfg.languages,
                                                       "origin": path}) for path in mcfg.files]
    if not sources:
        raise ValueError("multilingual: no parallel text; set multilingual.from_kg or "
                         "multilingual.files")
    pairs = sources[0].union(*sources[1:]).materialize()  # read once, filtered twice

    quarantined = pairs.filter(expr=col("reason") != "")
    write_parquet(quarantined, f"{staging}/quarantine", fs, PAIR_SCHEMA)
    by_reason = count_by(quarantined, "reason")
    counts = {"quarantined": sum(by_reason.values()),
              **{f"quarantined_{reason}": n for reason, n in sorted(by_reason.items())}}

    model_dir = multilingual_teacher_dir(cfg, run_dir)
    rows = pairs.filter(expr=col("reason") == "").map_batches(
        assign_split, batch_format="pyarrow",
        fn_kwargs={"fraction": mcfg.validation_fraction, "seed": mcfg.seed},
    )
    # The teacher's encoders: the teacher_targets stage's settings (targets.*).
    rows = encoder_pool(rows, model_dir, batch_size=cfg.targets.batch_size,
                        concurrency=cfg.targets.concurrency, num_gpus=cfg.targets.num_gpus,
                        rows_per_call=ENCODER_CALL_TEXTS) \
        .map_batches(student_rows, batch_format="numpy").materialize()
    if rows.count() == 0:
        raise ValueError(f"multilingual: no pairs in {mcfg.languages} from "
                         f"{'the KG and ' if mcfg.from_kg else ''}{mcfg.files}")
    schema = row_schema(len(rows.take(1)[0]["target"]))
    for split in SPLITS:
        chosen = rows.filter(expr=col("split") == split).drop_columns(["split"])
        write_parquet(chosen, f"{staging}/{split}", fs, schema)
        per_language = count_by(chosen.filter(expr=col("kind") == "translation"), "language")
        counts[f"{split}_pairs"] = sum(per_language.values())
        counts.update({f"{split}_pairs_{lang}": n for lang, n in sorted(per_language.items())})
        log.info("%s: translation pairs per language: %s", split, per_language)
    counts["teacher"] = model_dir
    return StageOutputs(outputs={"train": "train", "validation": "validation",
                                 "quarantine": "quarantine"}, counts=counts)


def count_by(ds, column: str) -> dict[str, int]:
    """Rows per value of ``column``, counted block by block as they stream past (a groupby
    would shuffle the rows for a handful of values)."""
    counts: dict[str, int] = {}
    for batch in ds.select_columns([column]).iter_batches(batch_format="pyarrow",
                                                          batch_size=None):
        for item in pc.value_counts(batch[column]).to_pylist():
            counts[item["values"]] = counts.get(item["values"], 0) + item["counts"]
    return counts


# ---------------------------------------------------------------------------------------
# Ray Data batch functions

def kg_pairs(batch: pa.Table, languages: list[str]) -> pa.Table:
    """Concept rows (``CONCEPT_SCHEMA``) -> one pair per name in one of ``languages``, with
    the concept's preferred name as source. The readers prefer English names, so it is
    English unless the concept has none: then its pairs are quarantined (no_english_name)."""
    columns = {name: [] for name in PAIR_SCHEMA.names}
    for concept, name, name_language, synonyms in zip(
            batch["concept_id"].to_pylist(), batch["preferred_name"].to_pylist(),
            batch["preferred_name_language"].to_pylist(), batch["synonyms"].to_pylist(),
            strict=True):
        reason = "" if name_language == "en" else "no_english_name"
        for synonym in synonyms or []:
            if synonym["language"] in languages and synonym["text"].strip():
                for column, value in zip(PAIR_SCHEMA.names, (
                        concept, synonym["language"], name, synonym["text"], "kg", reason),
                        strict=True):
                    columns[column].append(value)
    return pa.table(columns, schema=PAIR_SCHEMA)


def read_parallel_file(path: str):
    """A parallel file as a Ray Dataset (every column read as text)."""
    import pyarrow.csv as pacsv
    import ray.data

    if path.endswith(".parquet") or os.path.isdir(path):
        ds = ray.data.read_parquet(path)
    else:  # TSV: no quoting (names hold quotes and commas), every column a string
        ds = ray.data.read_csv(
            path, parse_options=pacsv.ParseOptions(delimiter="\t", quote_char=False),
            convert_options=pacsv.ConvertOptions(
                column_types={c: pa.string() for c in (*REQUIRED_COLUMNS, "concept_id")}))
    missing = [c for c in REQUIRED_COLUMNS if c not in ds.schema().names]
    if missing:
        raise ValueError(f"{path}: no column(s) {', '.join(missing)}; a parallel file needs "
                         f"{', '.join(REQUIRED_COLUMNS)} (and optionally concept_id)")
    return ds


def file_pairs(batch: pa.Table, languages: list[str], origin: str) -> pa.Table:
    """A parallel file's rows -> ``PAIR_SCHEMA`` rows, each with the reason it is
    quarantined (empty_source, empty_target, language_not_configured) or ""."""
    def text(name):
        return pc.utf8_trim_whitespace(pc.cast(batch[name], pa.string())).fill_null("")

    source, target, language = text("source"), text("target"), text("language")
    reason = pc.case_when(
        pc.make_struct(pc.equal(source, ""), pc.equal(target, ""),
                       pc.invert(pc.is_in(language, pa.array(languages)))),
        "empty_source", "empty_target", "language_not_configured").fill_null("")
    concept = pc.cast(batch["concept_id"], pa.string()) if "concept_id" in batch.column_names \
        else pa.nulls(batch.num_rows, pa.string())
    return pa.table([concept, language, source, target,
                     pa.array([origin] * batch.num_rows, pa.string()), reason],
                    schema=PAIR_SCHEMA)


def assign_split(batch: pa.Table, fraction: float, seed: int) -> pa.Table:
    """Adds ``split``: a concept (an English source, for pairs without concept id) is held
    out for validation, with all its pairs, when its seeded hash falls under ``fraction``;
    and ``text``, the English side, which the teacher's EncoderActor embeds."""
    keys = [c if c is not None else s.casefold() for c, s in
            zip(batch["concept_id"].to_pylist(), batch["source"].to_pylist(), strict=True)]
    split = ["validation" if draw(seed, "parallel", key) < fraction else "train"
             for key in keys]
    return batch.append_column("split", pa.array(split, pa.string())).append_column(
        "text", batch["source"])


def student_rows(batch: dict[str, np.ndarray]) -> pa.Table:
    """Embedded pairs -> two rows each: the English text and the translation, both with the
    teacher's embedding of the English text as target."""
    n, dim = batch["embedding"].shape
    twice = np.concatenate
    return pa.table({
        "split": pa.array(twice([batch["split"]] * 2), pa.string()),
        "concept_id": pa.array(twice([batch["concept_id"]] * 2), pa.string()),
        "language": pa.array(twice([batch["language"]] * 2), pa.string()),
        "english": pa.array(twice([batch["source"]] * 2), pa.string()),
        "text": pa.array(twice([batch["source"], batch["target"]]), pa.string()),
        "kind": pa.array(["english"] * n + ["translation"] * n, pa.string()),
        "target": pa.FixedSizeListArray.from_arrays(
            twice([batch["embedding"]] * 2).astype(np.float32).ravel(), dim),
    })
