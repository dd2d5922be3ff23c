"""How a stage reads what other stages wrote: the readers, schemas and model locations that
more than one stage (or a stage and the evaluation) share.

The layers only look down: ``stages`` names the stages, this module and the other shared
support (``run_dir``, ``keys``, ``broadcast``, ``models``, ``evaluation``...) sit below every
stage, and no stage imports another stage's module (``tests/test_stages.py`` checks it). A
stage that reads another's outputs reads them through here, by the registry's names.

Light at import time, like ``stages``: Ray and the model loaders are imported inside the
functions that need them.
"""

from __future__ import annotations

import pyarrow as pa
import pyarrow.parquet as pq

from biolord_ray import stages
from biolord_ray.config import PipelineConfig
from biolord_ray.run_dir import RunDir, read_parquet

# The splits of the stages that hold out a validation set (build_pairs, teacher_targets,
# parallel_data), each an output of that name.
SPLITS = ("train", "validation")


# ---------------------------------------------------------------------------------------
# ingest_kg

def english_concepts(run_dir: RunDir):
    """The ingested concepts with an English name, as a Ray Dataset: what the English phases
    (definition prompts, training pairs, evaluation sets) read. A concept named only in other
    languages (kept by kg.languages for the multilingual student) has no English text."""
    from ray.data.expressions import col

    concepts = read_parquet(run_dir.output(stages.INGEST_KG, "concepts"), run_dir.fs)
    return concepts.filter(expr=col("preferred_name_language") == "en")


# ---------------------------------------------------------------------------------------
# generate_definitions

DEFINITION_SCHEMA = pa.schema([
    ("concept_id", pa.string()),
    ("model", pa.string()),
    ("template_hash", pa.string()),
    ("sampling_params", pa.string()),  # JSON
    ("prompt_tokens", pa.int32()),
    ("output_tokens", pa.int32()),
    ("finish_reason", pa.string()),    # "stop", "length", or "error" (the engine failed)
    ("definition", pa.string()),       # the answer, or the engine's error message
    ("valid", pa.bool_()),
    ("reason", pa.string()),           # "" when valid, else one of validate.REASONS
])
GENERATED_DEFINITION_SOURCE = "llm"  # the generated definitions' source tag in training pairs


def read_definitions(run_dir: RunDir, valid_only: bool = True) -> pa.Table:
    """The generated definitions (the valid ones only, unless ``valid_only`` is false)."""
    table = pq.read_table(run_dir.output(stages.GENERATE_DEFINITIONS, "definitions"),
                          filesystem=run_dir.fs, schema=DEFINITION_SCHEMA)
    return table.filter(table["valid"]) if valid_only else table


# ---------------------------------------------------------------------------------------
# The teachers: a model given in the config, else a model this run trained

def targets_teacher_dir(cfg: PipelineConfig, run_dir: RunDir) -> str:
    """The teacher of ``teacher_targets`` (``targets.teacher``, else this run's contrastive
    model), as a local sentence-transformers directory."""
    return _model_dir(cfg, cfg.targets.teacher
                      or run_dir.output(stages.TRAIN_CONTRASTIVE, "model"))


def multilingual_teacher_dir(cfg: PipelineConfig, run_dir: RunDir) -> str:
    """The English teacher of ``parallel_data`` (``multilingual.teacher``, else this run's
    soup), as a local sentence-transformers directory."""
    return _model_dir(cfg, cfg.multilingual.teacher or run_dir.output(stages.SOUP, "model"))


def _model_dir(cfg: PipelineConfig, spec: str) -> str:
    from biolord_ray.models.encode import sentence_model_dir

    return sentence_model_dir(spec, cfg.models.cache_dir, cfg.models.trust_remote_code)
