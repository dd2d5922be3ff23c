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

import numpy as np

from biolord_ray import stages
from biolord_ray.config import PipelineConfig
from biolord_ray.run_dir import RunDir, StageOutputs, run_stage
from biolord_ray.training import fitting, loop
from biolord_ray.training.phases import CONTRASTIVE

log = logging.getLogger(__name__)

STAGE = stages.TRAIN_CONTRASTIVE


def run(cfg: PipelineConfig, run_dir: RunDir, force: bool = False) -> dict:
    inputs = stages.input_identities(STAGE, cfg, run_dir)
    settings = stage_settings(cfg)
    name = fitting.run_name(settings, inputs)
    return run_stage(run_dir, STAGE, settings, inputs,
                     lambda staging: _build(cfg, run_dir, staging, name, force), force=force)


def stage_settings(cfg: PipelineConfig) -> dict:
    """What the stage's identity hashes (fitting.section_identity: as runs made before did)."""
    return {"contrastive": fitting.section_identity(cfg.contrastive), "eval": cfg.eval}


def _build(cfg: PipelineConfig, run_dir: RunDir, staging: str, name: str,
           force: bool) -> StageOutputs:
    """Train, then export the best checkpoint with a model card, the training history and
    an evaluation of base vs trained model, into ``staging``."""
    from biolord_ray.evaluation import build_suite, evaluate_models, model_label

    tcfg = cfg.contrastive
    result = fitting.fit_phase(CONTRASTIVE, tcfg, cfg, run_dir, STAGE, name,
                               train=run_dir.output(stages.BUILD_PAIRS, "train"),
                               validation=run_dir.output(stages.BUILD_PAIRS, "validation"),
                               columns=["concept_id", "anchor", "positive"], force=force)

    def evaluate(model_dir: str) -> dict | None:
        if not cfg.eval.suites:
            return None
        return evaluate_models([tcfg.base_model, model_dir],
                               build_suite(cfg.eval, cfg.eval.suites, run_dir), cfg,
                               labels=[model_label(tcfg.base_model),
                                       stages.CONTRASTIVE_MODEL_LABEL],
                               locations=[None, run_dir.path(STAGE, loop.EXPORT_SUBDIR)])

    data = _data_summary(run_dir)
    history, best, _ = fitting.export_phase(
        result, tcfg, run_dir, staging, STAGE,
        history_title=f"contrastive: {tcfg.base_model} ({data['training pairs']} pairs)",
        evaluate=evaluate, score_names=("fast-suite score", "base model"),
        card={"section": "contrastive", "title": "BioLORD-2023-C style contrastive model",
              "summary": "Concept names aligned with their definitions and knowledge-graph "
                         "descriptions by contrastive training (in-batch negatives, "
                         "same-concept rows masked), the first phase of BioLORD-2023.",
              "cfg": cfg, "data": data})
    counts = {**fitting.phase_counts(history, best),
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
