"""Stage ``distill``: self-distillation (BioLORD-2023-S) as a Ray Tune grid of Ray Train runs.

Each trial trains a fresh copy of the base model to regress onto the teacher targets
(``teacher_targets``; sentence-transformers' ``MSELoss``) with the same Ray Train + DeepSpeed
loop as the contrastive phase, for one point of the grid seeds x learning rates (x any
``tune.grid`` axis). Trials are launched the way Ray 2.60 documents for Train inside Tune: a
function trainable builds and fits the ``TorchTrainer`` itself, and ``TuneReportCallback``
forwards every validation report (with its checkpoint path) to Tune.

Faults: a worker failure is retried inside the trial by Ray Train (``distill.max_failures``),
a failed trial is started again by Tune (``tune.max_failures``) and resumes from its Ray
Train checkpoints; an interrupted sweep is picked up with ``Tuner.restore`` on the next run
(a trial whose Train run had already finished reports that run's checkpoints again, without
starting its workers).

Output: ``trials.csv`` (each trial's best validation row), ``trials.png`` (validation score
per trial and step) and ``trials/<trial>/model`` (each trial's best checkpoint, exported), the
ingredients of the ``soup`` stage.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import re

import pyarrow.fs as pafs

from biolord_ray import stages
from biolord_ray.config import PipelineConfig, TrainConfig, config_hash
from biolord_ray.run_dir import RunDir, StageOutputs, run_stage
from biolord_ray.training import fitting, loop
from biolord_ray.training.phases import DISTILL

log = logging.getLogger(__name__)

STAGE = stages.DISTILL
TRIALS_DIR = "trials"


def run(cfg: PipelineConfig, run_dir: RunDir, force: bool = False) -> dict:
    inputs = stages.input_identities(STAGE, cfg, run_dir)
    settings = stage_settings(cfg)
    name = f"tune-{config_hash({'settings': settings, 'inputs': inputs})[:12]}"
    return run_stage(run_dir, STAGE, settings, inputs,
                     lambda staging: _build(cfg, run_dir, staging, name, force), force=force)


def stage_settings(cfg: PipelineConfig) -> dict:
    """What the stage's identity hashes (fitting.section_identity: as runs made before did;
    ``tune`` as a mapping, which it was without the soup's keys before they left it)."""
    return {"distill": fitting.section_identity(cfg.distill),
            "tune": dataclasses.asdict(cfg.tune), "eval": cfg.eval}


def trial_config(base: TrainConfig, params: dict) -> TrainConfig:
    return dataclasses.replace(base, **params)


def trial_name(params: dict) -> str:
    """A readable, path-safe name for a grid point: ``lr=2e-05_seed=0``."""
    return re.sub(r"[^A-Za-z0-9.=_-]", "",
                  "_".join(f"{k}={params[k]}" for k in sorted(params)))


def distill_trial(params: dict, cfg: PipelineConfig, run_dir_uri: str, train_storage: str):
    """One Tune trial: a Ray Train run of the distillation phase for one grid point.

    Runs as the trial's function (a driver: the Train workers get their own resources). A
    retried or restored trial resumes its Train run from the checkpoints under the same name.
    """
    from ray import tune
    from ray.tune.integration.ray_train import CHECKPOINT_PATH_KEY, TuneReportCallback

    from biolord_ray.runtime import configure_ray_data

    run_dir = RunDir(run_dir_uri)
    finished = fitting.finished_run(f"{train_storage}/{trial_name(params)}", run_dir.fs)
    if finished:
        # The run ended before Tune saved the trial as done (a sweep interrupted in between):
        # report its checkpoints as its workers would have, without starting them again.
        for metrics, checkpoint_path in finished:
            tune.report({**metrics, CHECKPOINT_PATH_KEY: checkpoint_path})
        return
    configure_ray_data()
    fitting.fit_phase(DISTILL, trial_config(cfg.distill, params), cfg, run_dir, STAGE,
                      trial_name(params), train=run_dir.output(stages.TEACHER_TARGETS, "train"),
                      validation=run_dir.output(stages.TEACHER_TARGETS, "validation"),
                      columns=["text", "target"], storage=train_storage,
                      callbacks=[TuneReportCallback()])


def trial_concurrency(cfg: PipelineConfig) -> int:
    """``tune.max_concurrent_trials``, or as many trials as the cluster fits at once: a Ray
    Train run starts only when all its workers fit, so more trial drivers would only wait."""
    import ray

    if cfg.tune.max_concurrent_trials:
        return cfg.tune.max_concurrent_trials
    tcfg, resources = cfg.distill, ray.cluster_resources()
    if tcfg.use_gpu:
        fits = resources.get("GPU", 0) // tcfg.num_workers
    else:  # one CPU stays free for the Ray Data tasks that stream the rows
        fits = (resources.get("CPU", 1) - 1) // (tcfg.num_workers * tcfg.cpus_per_worker
                                                 + cfg.tune.cpus_per_trial)
    return max(1, int(fits))


def _build(cfg: PipelineConfig, run_dir: RunDir, staging: str, name: str,
           force: bool) -> StageOutputs:
    from ray import tune

    fs = run_dir.fs
    storage = run_dir.path("_work", STAGE)
    if force:
        for folder in (f"{storage}/{name}", f"{storage}/train-{name}"):
            if fs.get_file_info(folder).type != pafs.FileType.NotFound:
                fs.delete_dir(folder)
    trainable = tune.with_resources(
        tune.with_parameters(distill_trial, cfg=cfg, run_dir_uri=run_dir.uri,
                             train_storage=f"{storage}/train-{name}"),
        {"cpu": cfg.tune.cpus_per_trial})
    path = f"{storage}/{name}"
    if tune.Tuner.can_restore(path, storage_filesystem=fs):
        log.info("resuming the interrupted sweep at %s", path)
        tuner = tune.Tuner.restore(path, trainable, resume_errored=True, storage_filesystem=fs)
    else:
        tuner = tune.Tuner(
            trainable,
            param_space={k: tune.grid_search(v) for k, v in cfg.tune.grid_points().items()},
            tune_config=tune.TuneConfig(metric=loop.SCORE, mode="max",
                                        max_concurrent_trials=trial_concurrency(cfg)),
            run_config=tune.RunConfig(
                name=name, storage_path=storage, storage_filesystem=fs,
                failure_config=tune.FailureConfig(max_failures=cfg.tune.max_failures)))
    grid = tuner.fit()
    # Tune returns normally after Ctrl+C (its state is saved): keep the stage incomplete so
    # the next run restores the sweep instead of souping what finished. Trials not yet started
    # are not in the grid at all, and Tune marks the interrupted ones terminated, so count the
    # trials whose last report is their run's last step against the grid's size.
    points = math.prod(len(values) for values in cfg.tune.grid_points().values())
    finished = sum(1 for r in grid if r.error is None
                   and r.metrics.get("step", -1) >= r.metrics.get("total_steps", math.inf))
    unfinished = points - finished - grid.num_errors
    if unfinished:
        raise RuntimeError(f"the sweep was interrupted with {unfinished} of {points} trials "
                           f"unfinished; run again to resume it from {path}")
    return export_trials(cfg, run_dir, staging, grid, base_score(cfg, run_dir))


def base_score(cfg: PipelineConfig, run_dir: RunDir) -> float:
    """The base model's validation score (every trial starts from it), for the plot."""
    from biolord_ray.evaluation import build_suite, main_score
    from biolord_ray.models.encode import Embedder, load_sentence_model, sentence_model_dir

    if not cfg.distill.validation_suites:
        return math.nan
    scored = _contrastive_base_score(cfg, run_dir)
    if scored is not None:
        return scored
    model = load_sentence_model(sentence_model_dir(
        cfg.distill.base_model, cfg.models.cache_dir, cfg.models.trust_remote_code),
        trust_remote_code=cfg.models.trust_remote_code)
    suite = build_suite(cfg.eval, cfg.distill.validation_suites, run_dir, fast=True)
    return main_score(suite.run(model, Embedder(model)))


def _contrastive_base_score(cfg: PipelineConfig, run_dir: RunDir) -> float | None:
    """The same model on the same suite, already scored as step 0 of the contrastive run's
    validation curve (its history), when both phases start from one base model."""
    import pandas as pd


    record = run_dir.stage_record(stages.TRAIN_CONTRASTIVE)
    if (not record or record["status"] != "complete"
            or cfg.contrastive.base_model != cfg.distill.base_model
            or cfg.contrastive.validation_suites != cfg.distill.validation_suites):
        return None
    with run_dir.fs.open_input_stream(run_dir.output(stages.TRAIN_CONTRASTIVE, "history")) as f:
        history = pd.read_csv(f)
    first = history.iloc[0]
    return float(first[loop.SCORE]) if first["step"] == 0 else None


def export_trials(cfg: PipelineConfig, run_dir: RunDir, staging: str, grid,
                  base_score: float) -> StageOutputs:
    """Each finished trial's best checkpoint -> ``trials/<name>/model``, with the table and
    plot of the trials (``ResultGrid.get_dataframe``: each trial's best reported row)."""
    import pandas as pd
    from ray.tune.integration.ray_train import CHECKPOINT_PATH_KEY

    axes = list(cfg.tune.grid_points())
    best = grid.get_dataframe(filter_metric=loop.SCORE, filter_mode="max")
    failed = [r for r in grid if r.error is not None]
    for result in failed:
        log.error("trial %s failed: %s", result.path, result.error)
    best = best[best[CHECKPOINT_PATH_KEY].notna()] if CHECKPOINT_PATH_KEY in best else best[:0]
    if best.empty:
        raise RuntimeError(f"every distillation trial failed ({len(failed)}); first error: "
                           f"{failed[0].error if failed else 'no trial reported a checkpoint'}")
    best = best.sort_values(loop.SCORE, ascending=False).reset_index(drop=True)
    # The grid point of each trial (config/<axis>; the reported metrics have an "lr" too).
    params = best[[f"config/{a}" for a in axes]].set_axis(axes, axis=1)
    best["trial"] = [trial_name(dict(zip(axes, point, strict=True)))
                     for point in params.itertuples(index=False)]
    for _, row in best.iterrows():
        pafs.copy_files(f"{row[CHECKPOINT_PATH_KEY]}/{loop.EXPORT_SUBDIR}",
                        f"{staging}/{TRIALS_DIR}/{row['trial']}/{loop.EXPORT_SUBDIR}",
                        source_filesystem=run_dir.fs, destination_filesystem=run_dir.fs)
    best["model"] = [f"{TRIALS_DIR}/{t}/{loop.EXPORT_SUBDIR}" for t in best["trial"]]
    metrics = [c for c in best.columns if c == loop.SCORE or c.startswith("val")]
    table = pd.concat([best[["trial"]], params, best[["step", *sorted(metrics), "model"]]],
                      axis=1)
    # Each trial's validation curve; a trial resumed by Tuner.restore can come back without
    # its earlier rows (its best row is in the table either way).
    curves = {trial_name({a: r.config[a] for a in axes}): r.metrics_dataframe
              for r in grid if r.error is None and r.metrics_dataframe is not None
              and loop.SCORE in r.metrics_dataframe}
    _write_table_and_plot(run_dir, staging, table, curves, base_score)
    counts = {"trials": len(table), "failed_trials": len(failed),
              "best_trial": table["trial"].iloc[0], "base_val_score": round(base_score, 4),
              "best_val_score": round(float(table[loop.SCORE].iloc[0]), 4),
              "worst_val_score": round(float(table[loop.SCORE].iloc[-1]), 4)}
    return StageOutputs(outputs={"trials": "trials.csv", "plot": "trials.png"}, counts=counts)


def _write_table_and_plot(run_dir: RunDir, staging: str, table, curves: dict,
                          base_score: float) -> None:
    import tempfile

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    with tempfile.TemporaryDirectory(prefix="biolord-trials-") as local:
        table.to_csv(f"{local}/trials.csv", index=False, float_format="%.6g")
        fig, ax = plt.subplots(figsize=(7, 4))
        for trial, frame in sorted(curves.items()):
            frame = frame.dropna(subset=[loop.SCORE])
            ax.plot(frame["step"], frame[loop.SCORE], marker="o", label=trial)
        ax.axhline(base_score, color="gray", linestyle="--", label="base model")
        ax.set_xlabel("optimiser step")
        ax.set_ylabel("validation score (fast suite)")
        ax.set_title(f"Distillation grid: {len(curves)} trials")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
        fig.tight_layout()
        fig.savefig(f"{local}/trials.png", dpi=120)
        plt.close(fig)
        pafs.copy_files(local, staging, destination_filesystem=run_dir.fs)
