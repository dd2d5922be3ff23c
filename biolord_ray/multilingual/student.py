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
import os
import tempfile

import pyarrow.dataset as pads
import pyarrow.fs as pafs

from biolord_ray import stages
from biolord_ray.config import PipelineConfig, config_hash
from biolord_ray.multilingual import parallel
from biolord_ray.run_dir import RunDir, StageOutputs, run_stage
from biolord_ray.training import loop
from biolord_ray.training.phases import MULTILINGUAL

log = logging.getLogger(__name__)

STAGE = stages.DISTILL_MULTILINGUAL


def run(cfg: PipelineConfig, run_dir: RunDir, force: bool = False) -> dict:
    inputs = stages.input_identities(STAGE, cfg, run_dir)
    settings = {"train": cfg.multilingual.train, "eval": cfg.eval}
    name = f"ray-train-{config_hash({'settings': settings, 'inputs': inputs})[:12]}"
    return run_stage(run_dir, STAGE, settings, inputs,
                     lambda staging: _build(cfg, run_dir, staging, name, force), force=force)


def _build(cfg: PipelineConfig, run_dir: RunDir, staging: str, name: str,
           force: bool) -> StageOutputs:
    from biolord_ray.evaluation import build_suite

    tcfg, fs = cfg.multilingual.train, run_dir.fs
    train, validation = (run_dir.output(stages.PARALLEL_DATA, split) for split in parallel.SPLITS)
    check_width(cfg, pads.dataset(train, filesystem=fs, format="parquet").schema)
    datasets = loop.read_datasets(train, validation, fs, ["text", "target"], tcfg)
    suite = build_suite(cfg.eval, tcfg.validation_suites, run_dir, fast=True) \
        if tcfg.validation_suites else None
    storage = run_dir.path("_work", STAGE)  # outside staging: a rerun resumes from it
    if force and fs.get_file_info(f"{storage}/{name}").type != pafs.FileType.NotFound:
        fs.delete_dir(f"{storage}/{name}")
    result = loop.fit(MULTILINGUAL, tcfg, cfg.models, datasets, suite, storage, fs, name)
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
    from biolord_ray.evaluation.report import markdown, write_report
    from biolord_ray.training.export import export_best, write_history, write_model_card

    tcfg, mcfg = cfg.multilingual.train, cfg.multilingual
    data = run_dir.completed(stages.PARALLEL_DATA)["counts"]
    with tempfile.TemporaryDirectory(prefix="biolord-export-") as local:
        model_dir = os.path.join(local, loop.EXPORT_SUBDIR)
        history, best_metrics = export_best(result, model_dir)
        write_history(history, local, f"multilingual student: {tcfg.base_model} "
                                      f"({data['train_pairs']} translation pairs)")
        suites = list(dict.fromkeys([*cfg.eval.suites, "translation"]))
        before_label = f"student before ({model_label(tcfg.base_model)})"
        report = evaluate_models(
            [parallel.teacher_dir(cfg, run_dir), tcfg.base_model, model_dir],
            build_suite(cfg.eval, suites, run_dir), cfg,
            labels=["teacher", before_label, "multilingual"],
            locations=[None, None, run_dir.path(STAGE, loop.EXPORT_SUBDIR)])
        write_report(report, os.path.join(local, "evaluation"))
        training = {
            "optimiser steps": history[-1]["step"],
            "Ray Train workers": f"{tcfg.num_workers} ({'GPU' if tcfg.use_gpu else 'CPU'})",
            "DeepSpeed": f"ZeRO-{tcfg.zero_stage}, {loop.resolve_precision(tcfg)}",
            "selected checkpoint": f"step {best_metrics['step']} (translation accuracy "
                                   f"{best_metrics[loop.SCORE]:.4f}; before training "
                                   f"{history[0][loop.SCORE]:.4f})"}
        languages = sorted(k.removeprefix("train_pairs_") for k in data
                           if k.startswith("train_pairs_"))
        write_model_card(
            model_dir, load_path=run_dir.path(STAGE, loop.EXPORT_SUBDIR),
            section="multilingual.train", title="BioLORD-2023-M style multilingual model",
            summary="The English model's embedding space extended to "
                    f"{', '.join(languages)}: the student learned to embed English names and "
                    "their translations where the English teacher embeds the English name "
                    "(multilingual knowledge distillation).",
            cfg=cfg, tcfg=tcfg, data={
                "parallel pairs (training)": data["train_pairs"],
                "parallel pairs (held out)": data["validation_pairs"],
                "sources": ", ".join([*(["the KG"] if mcfg.from_kg else []), *mcfg.files]),
                "teacher": data["teacher"]},
            training=training, evaluation_markdown=markdown(report),
            languages=["en", *languages])
        pafs.copy_files(local, staging, destination_filesystem=run_dir.fs)
    student = report["models"]["multilingual"]["benchmarks"]
    before = report["models"][before_label]["benchmarks"]
    counts = {"steps": history[-1]["step"], "best_step": best_metrics["step"],
              "best_val_score": round(best_metrics[loop.SCORE], 4),
              "base_val_score": round(history[0][loop.SCORE], 4),
              **{f"{name}_before": round(before[name]["accuracy"], 4)
                 for name in student if name.startswith("translation-")},
              **{f"{name}_after": round(student[name]["accuracy"], 4)
                 for name in student if name.startswith("translation-")}}
    return StageOutputs(outputs={"model": loop.EXPORT_SUBDIR, "history": "history.csv",
                                 "evaluation": "evaluation"}, counts=counts)
