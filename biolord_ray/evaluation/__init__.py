"""The evaluation suite: biomedical similarity files, KG entity linking, definition retrieval
and hierarchy, on any number of models side by side (``jobs/evaluate.py``).

``build_suite`` picks the tasks, ``evaluate_models`` scores models on them and
``report.write_report`` writes results.json, results.md and results.png.
"""

from __future__ import annotations

import datetime as dt
import os
from pathlib import Path

from biolord_ray.config import PipelineConfig
from biolord_ray.evaluation.benchmark_files import PRESETS, EvalFormatError, load_pairs
from biolord_ray.evaluation.suite import EvalSuite, build_suite, main_score
from biolord_ray.models.encode import Embedder, load_sentence_model, sentence_model_dir

__all__ = ["PRESETS", "EvalFormatError", "EvalSuite", "build_suite", "evaluate_models",
           "load_pairs", "main_score", "model_label"]


def model_label(spec: str) -> str:
    """A short name for reports: the packaged alias, or the model directory's name."""
    if spec.startswith("packaged:"):
        return spec.removeprefix("packaged:")
    parts = Path(os.path.expanduser(spec.rstrip("/"))).parts
    if len(parts) >= 2 and parts[-1] == "model":
        return "/".join(parts[-2:])  # runs/x/contrastive/model -> contrastive/model
    return parts[-1] if parts else spec


def evaluate_models(specs: list[str], suite: EvalSuite, cfg: PipelineConfig,
                    labels: list[str] | None = None,
                    locations: list[str | None] | None = None) -> dict:
    """Score each model on every task of ``suite``; the report dict ``write_report`` takes.
    ``labels`` name the models in the report (default: ``model_label`` of each spec);
    ``locations`` say where a model scored from a temporary directory will live."""
    report = {"fast": suite.fast, "benchmarks": suite.names,
              "created_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
              "models": {}}
    for i, spec in enumerate(specs):
        model_dir = sentence_model_dir(spec, cfg.models.cache_dir, cfg.models.trust_remote_code)
        model = load_sentence_model(model_dir, trust_remote_code=cfg.models.trust_remote_code)
        embed = Embedder(model, model_dir, batch_size=cfg.eval.batch_size,
                         ray_min_texts=cfg.eval.ray_min_texts,
                         concurrency=cfg.eval.encoder_concurrency,
                         num_gpus=cfg.eval.encoder_num_gpus)
        results = suite.run(model, embed)
        label = labels[i] if labels else model_label(spec)
        while label in report["models"]:
            label += "'"
        location = locations[i] if locations else None
        report["models"][label] = {"spec": location or spec, "path": location or model_dir,
                                   "benchmarks": results,
                                   "score": main_score(results)}
    return report
