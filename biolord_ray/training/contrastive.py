"""Stage ``train_contrastive``: the contrastive phase (BioLORD-2023-C) on Ray Train + DeepSpeed.

The base encoder learns to place each concept name next to its definitions and KG
descriptions (``build_pairs``), with in-batch negatives gathered across workers and
same-concept rows masked (``phases.CONTRASTIVE``). The checkpoint with the best
fast-suite score becomes ``train_contrastive/model`` (a sentence-transformers directory with
a model card); ``history.csv``/``history.png`` hold the training curve and ``evaluation/``
compares the base and trained models on the full evaluation suite.
"""

from __future__ import annotations

import logging
import os
import tempfile

import numpy as np
import pyarrow.fs as pafs

from biolord_ray import stages
from biolord_ray.config import PipelineConfig, config_hash
from biolord_ray.run_dir import RunDir, StageOutputs, run_stage
from biolord_ray.training import loop
from biolord_ray.training.phases import CONTRASTIVE

log = logging.getLogger(__name__)

STAGE = stages.TRAIN_CONTRASTIVE


def run(cfg: PipelineConfig, run_dir: RunDir, force: bool = False) -> dict:
    inputs = stages.input_identities(STAGE, cfg, run_dir)
    settings = {"contrastive": cfg.contrastive, "eval": cfg.eval}
    name = f"ray-train-{config_hash({'settings': settings, 'inputs': inputs})[:12]}"
    return run_stage(run_dir, STAGE, settings, inputs,
                     lambda staging: _build(cfg, run_dir, staging, name, force), force=force)


def _build(cfg: PipelineConfig, run_dir: RunDir, staging: str, name: str,
           force: bool) -> StageOutputs:
    from biolord_ray.evaluation import build_suite

    tcfg, fs = cfg.contrastive, run_dir.fs
    datasets = loop.read_datasets(run_dir.output(stages.BUILD_PAIRS, "train"),
                                  run_dir.output(stages.BUILD_PAIRS, "validation"), fs,
                                  ["concept_id", "anchor", "positive"], tcfg)
    suite = build_suite(cfg.eval, tcfg.validation_suites, run_dir, fast=True) \
        if tcfg.validation_suites else None

    # Ray Train's own storage (checkpoints, run state) lives outside the staging folder so
    # that a rerun after a crash finds it and resumes; ``name`` changes with config/inputs.
    storage = run_dir.path("_work", STAGE)
    if force and fs.get_file_info(f"{storage}/{name}").type != pafs.FileType.NotFound:
        fs.delete_dir(f"{storage}/{name}")
    result = loop.fit(CONTRASTIVE, tcfg, cfg.models, datasets, suite, storage, fs, name)
    return _export(cfg, run_dir, staging, result)


def _export(cfg: PipelineConfig, run_dir: RunDir, staging: str, result) -> StageOutputs:
    """The best checkpoint's model with a model card, the training history and an evaluation
    of base vs trained model, into ``staging``."""
    from biolord_ray.evaluation import build_suite, evaluate_models, model_label
    from biolord_ray.evaluation.report import markdown, write_report
    from biolord_ray.training.export import export_best, write_history, write_model_card

    tcfg, data = cfg.contrastive, _data_summary(run_dir)
    with tempfile.TemporaryDirectory(prefix="biolord-export-") as local:
        model_dir = os.path.join(local, loop.EXPORT_SUBDIR)
        history, best_metrics = export_best(result, model_dir)
        write_history(history, local, f"contrastive: {tcfg.base_model} "
                                      f"({data['training pairs']} pairs)")
        report_md = None
        if cfg.eval.suites:
            suite = build_suite(cfg.eval, cfg.eval.suites, run_dir)
            report = evaluate_models([tcfg.base_model, model_dir], suite, cfg,
                                     labels=[model_label(tcfg.base_model),
                                             stages.CONTRASTIVE_MODEL_LABEL],
                                     locations=[None, run_dir.path(STAGE, loop.EXPORT_SUBDIR)])
            write_report(report, os.path.join(local, "evaluation"))
            report_md = markdown(report)
        steps = history[-1]["step"]
        training = {
            "optimiser steps": steps, "epochs": tcfg.epochs,
            "Ray Train workers": f"{tcfg.num_workers} ({'GPU' if tcfg.use_gpu else 'CPU'})",
            "global batch": f"{tcfg.batch_size} x {tcfg.num_workers} workers x "
                            f"{tcfg.grad_accumulation} accumulation",
            "DeepSpeed": f"ZeRO-{tcfg.zero_stage}, {loop.resolve_precision(tcfg)}",
            "selected checkpoint": f"step {best_metrics['step']} "
                                   f"(fast-suite score {best_metrics[loop.SCORE]:.4f}; "
                                   f"base model {history[0][loop.SCORE]:.4f})",
        }
        write_model_card(
            model_dir, load_path=run_dir.path(STAGE, loop.EXPORT_SUBDIR), section="contrastive",
            title="BioLORD-2023-C style contrastive model",
            summary="Concept names aligned with their definitions and knowledge-graph "
                    "descriptions by contrastive training (in-batch negatives, same-concept "
                    "rows masked), the first phase of BioLORD-2023.",
            cfg=cfg, tcfg=tcfg, data=data, training=training, evaluation_markdown=report_md)
        pafs.copy_files(local, staging, destination_filesystem=run_dir.fs)
    counts = {"steps": steps, "best_step": best_metrics["step"],
              "best_val_score": round(best_metrics[loop.SCORE], 4),
              "base_val_score": round(history[0][loop.SCORE], 4),
              "pairs_per_second": round(float(np.mean(
                  [r["pairs_per_second"] for r in history if "pairs_per_second" in r])), 1)}
    outputs = {"model": loop.EXPORT_SUBDIR, "history": "history.csv"}
    if cfg.eval.suites:
        outputs["evaluation"] = "evaluation"
    return StageOutputs(outputs=outputs, counts=counts)


def _data_summary(run_dir: RunDir) -> dict:
    counts = run_dir.completed(stages.BUILD_PAIRS)["counts"]
    return {"training pairs": counts["train_pairs"],
            "training concepts": counts["train_concepts"],
            "validation pairs": counts["validation_pairs"],
            "validation concepts": counts["validation_concepts"]}
