"""Stage ``distill_multilingual``: the multilingual student (BioLORD-2023-M).

The student (``multilingual.train.base_model``) learns to embed each English text and each
of its translations where the English teacher embeds the English text (``parallel_data``):
the self-distillation phase's MSE regression (sentence-transformers' ``MSELoss``) on the
same Ray Train + DeepSpeed loop, validated on the held-out translation pairs (suite
"translation": accuracy of finding the translation among all translations and back).

Output: ``model/`` (the best checkpoint, with a model card), ``history.csv``/``history.png``
(training curve; per-language accuracy at each validation) and ``evaluation/``: teacher,
student before training and student after it, on the evaluation suite plus translation.
"""

from __future__ import annotations

import logging

import pyarrow.dataset as pads

from biolord_ray import stages
from biolord_ray.config import PipelineConfig
from biolord_ray.run_dir import RunDir, StageOutputs, run_stage
from biolord_ray.stage_outputs import SPLITS, multilingual_teacher_dir
from biolord_ray.training import fitting, loop
from biolord_ray.training.phases import MULTILINGUAL

log = logging.getLogger(__name__)

STAGE = stages.DISTILL_MULTILINGUAL


def run(cfg: PipelineConfig, run_dir: RunDir, force: bool = False) -> dict:
    inputs = stages.input_identities(STAGE, cfg, run_dir)
    settings = stage_settings(cfg)
    name = fitting.run_name(settings, inputs)
    return run_stage(run_dir, STAGE, settings, inputs,
                     lambda staging: _build(cfg, run_dir, staging, name, force), force=force)


def stage_settings(cfg: PipelineConfig) -> dict:
    """What the stage's identity hashes (fitting.section_identity: as runs made before did)."""
    return {"train": fitting.section_identity(cfg.multilingual.train), "eval": cfg.eval}


def _build(cfg: PipelineConfig, run_dir: RunDir, staging: str, name: str,
           force: bool) -> StageOutputs:
    tcfg, fs = cfg.multilingual.train, run_dir.fs
    train, validation = (run_dir.output(stages.PARALLEL_DATA, split)
                         for split in SPLITS)
    check_width(cfg, pads.dataset(train, filesystem=fs, format="parquet").schema)
    result = fitting.fit_phase(MULTILINGUAL, tcfg, cfg, run_dir, STAGE, name, train=train,
                               validation=validation, columns=["text", "target"], force=force)
    return _export(cfg, run_dir, staging, result)


def check_width(cfg: PipelineConfig, rows_schema) -> None:
    """The student regresses onto the teacher's embeddings, so both must have one width."""
    from biolord_ray.models.encode import load_sentence_model, sentence_model_dir

    spec = cfg.multilingual.train.base_model
    student = load_sentence_model(sentence_model_dir(spec, cfg.models.cache_dir,
                                                     cfg.models.trust_remote_code),
                                  trust_remote_code=cfg.models.trust_remote_code)
    width = student.get_embedding_dimension()
    teacher_width = rows_schema.field("target").type.list_size
    if width != teacher_width:
        raise ValueError(
            f"multilingual.train.base_model {spec!r} embeds in {width} dimensions and the "
            f"teacher in {teacher_width}: the student learns the teacher's embeddings (MSE), "
            "so pick a student of the teacher's width")


def _export(cfg: PipelineConfig, run_dir: RunDir, staging: str, result) -> StageOutputs:
    """The best checkpoint's model with its card, the history, and the evaluation of teacher,
    student before and student after training (suite + translation), into ``staging``."""
    from biolord_ray.evaluation import build_suite, evaluate_models, model_label

    tcfg, mcfg = cfg.multilingual.train, cfg.multilingual
    data = run_dir.completed(stages.PARALLEL_DATA)["counts"]
    before_label = f"student before ({model_label(tcfg.base_model)})"

    def evaluate(model_dir: str) -> dict:
        suites = list(dict.fromkeys([*cfg.eval.suites, "translation"]))
        return evaluate_models(
            [multilingual_teacher_dir(cfg, run_dir), tcfg.base_model, model_dir],
            build_suite(cfg.eval, suites, run_dir), cfg,
            labels=["teacher", before_label, "multilingual"],
            locations=[None, None, run_dir.path(STAGE, loop.EXPORT_SUBDIR)])

    languages = sorted(k.removeprefix("train_pairs_") for k in data
                       if k.startswith("train_pairs_"))
    history, best, report = fitting.export_phase(
        result, tcfg, run_dir, staging, STAGE,
        history_title=f"multilingual student: {tcfg.base_model} "
                      f"({data['train_pairs']} translation pairs)",
        evaluate=evaluate, score_names=("translation accuracy", "before training"),
        card={"section": "multilingual.train",
              "title": "BioLORD-2023-M style multilingual model",
              "summary": "The English model's embedding space extended to "
                         f"{', '.join(languages)}: the student learned to embed English names "
                         "and their translations where the English teacher embeds the English "
                         "name (multilingual knowledge distillation).",
              "cfg": cfg, "languages": ["en", *languages],
              "data": {"parallel pairs (training)": data["train_pairs"],
                       "parallel pairs (held out)": data["validation_pairs"],
                       "sources": ", ".join([*(["the KG"] if mcfg.from_kg else []),
                                             *mcfg.files]),
                       "teacher": data["teacher"]}})
    student = report["models"]["multilingual"]["benchmarks"]
    before = report["models"][before_label]["benchmarks"]
    counts = {**fitting.phase_counts(history, best),
              **{f"{name}_before": round(before[name]["accuracy"], 4)
                 for name in student if name.startswith("translation-")},
              **{f"{name}_after": round(student[name]["accuracy"], 4)
                 for name in student if name.startswith("translation-")}}
    return StageOutputs(outputs={"model": loop.EXPORT_SUBDIR, "history": "history.csv",
                                 "evaluation": "evaluation"}, counts=counts)
