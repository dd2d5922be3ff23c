"""A training stage's two halves, shared by the contrastive phase (-C), the distillation
trials (-S) and the multilingual student (-M): fit a phase on Ray Train from two Parquet
splits, and export the best checkpoint with its history, evaluation and model card; and how
the stages write their training section into their identity."""

from __future__ import annotations

import dataclasses
import os
import tempfile
from collections.abc import Callable

import pyarrow.fs as pafs

from biolord_ray.config import PipelineConfig, TrainConfig, config_hash
from biolord_ray.run_dir import RunDir
from biolord_ray.training import loop

# The three training sections used to share one TrainConfig class that had the contrastive
# loss's keys (now ContrastiveConfig's only), and a stage's identity (its config hash, its Ray
# Train run's name) hashed the section as its repr: config_hash writes a dataclass in the
# settings with str(). So that a run made before still resumes, the stages write the section
# that old way; distillation never read the loss's keys, whose defaults stand in for them.
LEGACY_LOSS_KEYS = {"scale": 20.0, "symmetric": True}


def section_identity(tcfg: TrainConfig) -> str:
    """``tcfg`` as stage identities hash it: the repr of the TrainConfig class of before,
    with the loss's keys after ``deepspeed``."""
    values = []
    for f in dataclasses.fields(TrainConfig):
        values.append((f.name, getattr(tcfg, f.name)))
        if f.name == "deepspeed":
            values += [(k, getattr(tcfg, k, default)) for k, default in LEGACY_LOSS_KEYS.items()]
    return f"TrainConfig({', '.join(f'{k}={v!r}' for k, v in values)})"


def run_name(settings: dict, inputs: dict) -> str:
    """The Ray Train run's name: a rerun with the same config and inputs resumes it."""
    return f"ray-train-{config_hash({'settings': settings, 'inputs': inputs})[:12]}"


def fit_phase(phase: loop.Phase, tcfg: TrainConfig, cfg: PipelineConfig, run_dir: RunDir,
              stage: str, name: str, *, train: str, validation: str, columns: list[str],
              force: bool = False, storage: str | None = None, callbacks: list | None = None):
    """``loop.fit`` on the ``train``/``validation`` Parquet outputs, validated on the fast
    suite ``tcfg.validation_suites``. Ray Train's storage (checkpoints, run state) is
    ``<run_dir>/_work/<stage>`` unless given: outside the stage's staging folder, so a
    rerun after a crash finds it and resumes; ``force`` starts the run over."""
    from biolord_ray.evaluation import build_suite

    fs = run_dir.fs
    datasets = loop.read_datasets(train, validation, fs, columns, tcfg)
    suite = build_suite(cfg.eval, tcfg.validation_suites, run_dir, fast=True) \
        if tcfg.validation_suites else None
    storage = storage or run_dir.path("_work", stage)
    if force and fs.get_file_info(f"{storage}/{name}").type != pafs.FileType.NotFound:
        fs.delete_dir(f"{storage}/{name}")
    return loop.fit(phase, tcfg, cfg.models, datasets, suite, storage, fs, name,
                    callbacks=callbacks)


def finished_run(path: str, filesystem) -> list[tuple[dict, str]] | None:
    """The Ray Train run at ``path``, if it trained to its last step: its kept checkpoints'
    (metrics, path), in step order; None if it did not finish or never started."""
    from ray.train import Result

    try:
        result = Result.from_path(path, storage_filesystem=filesystem)
    except RuntimeError:  # no run there, or none that saved a checkpoint
        return None
    last = result.metrics or {}
    if last.get("step", -1) < last.get("total_steps", float("inf")):
        return None
    return sorted(((metrics, checkpoint.path) for checkpoint, metrics in result.best_checkpoints),
                  key=lambda kept: kept[0]["step"])


def export_phase(result, tcfg: TrainConfig, run_dir: RunDir, staging: str, stage: str, *,
                 history_title: str, evaluate: Callable[[str], dict | None],
                 score_names: tuple[str, str], card: dict) -> tuple[list[dict], dict, dict]:
    """Into ``staging``: the best checkpoint's model (``model/``) with its card, the history
    (``history.csv/.png``) and ``evaluate(model_dir)``'s report (``evaluation/``, when it
    returns one). ``score_names``: what the validation score and step 0 are, for the card
    ("fast-suite score", "base model"). ``card``: ``write_model_card``'s other arguments.
    Returns (history, the best checkpoint's metrics, the report or None)."""
    from biolord_ray.evaluation.report import markdown, write_report
    from biolord_ray.training.export import export_best, write_history, write_model_card

    with tempfile.TemporaryDirectory(prefix="biolord-export-") as local:
        model_dir = os.path.join(local, loop.EXPORT_SUBDIR)
        history, best = export_best(result, model_dir)
        write_history(history, local, history_title)
        report = evaluate(model_dir)
        if report:
            write_report(report, os.path.join(local, "evaluation"))
        score, start = score_names
        training = {
            "optimiser steps": history[-1]["step"], "epochs": tcfg.epochs,
            "Ray Train workers": f"{tcfg.num_workers} ({'GPU' if tcfg.use_gpu else 'CPU'})",
            "global batch": f"{tcfg.batch_size} x {tcfg.num_workers} workers x "
                            f"{tcfg.grad_accumulation} accumulation",
            "DeepSpeed": f"ZeRO-{tcfg.zero_stage}, {loop.resolve_precision(tcfg)}",
            "selected checkpoint": f"step {best['step']} ({score} {best[loop.SCORE]:.4f}; "
                                   f"{start} {history[0][loop.SCORE]:.4f})",
        }
        write_model_card(model_dir, load_path=run_dir.path(stage, loop.EXPORT_SUBDIR),
                         tcfg=tcfg, training=training,
                         evaluation_markdown=markdown(report) if report else None, **card)
        pafs.copy_files(local, staging, destination_filesystem=run_dir.fs)
    return history, best, report


def phase_counts(history: list[dict], best: dict) -> dict:
    """The manifest counts every training stage records."""
    return {"steps": history[-1]["step"], "best_step": best["step"],
            "best_val_score": round(best[loop.SCORE], 4),
            "base_val_score": round(history[0][loop.SCORE], 4)}
