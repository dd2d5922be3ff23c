"""The pipeline, written down once: every stage, the module that builds it, the stages whose
outputs it reads and the outputs it provides, in the order the main job runs them.

``jobs/full_pipeline.py`` (and its ``--from``/``--only``), the other jobs' prerequisites, each
stage's input fingerprints and the report all read this list; a stage names another through
the constants here, never by importing it (the readers of outputs that several stages share
are in ``stage_outputs``). Adding a stage: its module (a ``run(cfg, run_dir, force=False)``
returning the manifest record), one ``Stage`` line below, and its config section (a
dataclass in config.py with its own ``check``).

Stage modules are imported only when a stage runs, so this module stays free of Ray, torch
and every stage's dependencies.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass

INGEST_KG = "ingest_kg"
EVAL_SETS = "eval_sets"
GENERATE_DEFINITIONS = "generate_definitions"
BUILD_PAIRS = "build_pairs"
TRAIN_CONTRASTIVE = "train_contrastive"
TEACHER_TARGETS = "teacher_targets"
DISTILL = "distill"
SOUP = "soup"
PARALLEL_DATA = "parallel_data"
DISTILL_MULTILINGUAL = "distill_multilingual"
REPORT = "report"

# The trained model's label in train_contrastive's evaluation/results.json, which the soup
# and the report read (the base model's label is ``evaluation.model_label(spec)``).
CONTRASTIVE_MODEL_LABEL = "contrastive"


def always(cfg) -> bool:
    return True


@dataclass(frozen=True)
class Input:
    """Another stage's outputs that a stage reads."""

    key: str      # its key in the stage's input fingerprints (renaming one reruns the stage)
    stage: str
    when: Callable = always   # cfg -> whether the stage reads it under this config
    # Read when that stage has run, not a prerequisite otherwise (definitions are optional
    # for the training pairs).
    optional: bool = False


def no_demands(cfg) -> list:
    return []


@dataclass(frozen=True)
class Stage:
    name: str
    module: str               # its ``run(cfg, run_dir, force=False)`` builds the stage
    inputs: tuple[Input, ...] = ()
    outputs: tuple[str, ...] = ()   # names for ``RunDir.output`` (some only under a config)
    enabled: Callable = always      # cfg -> whether the main job runs it
    # cfg -> [(resource, amount, the keys asking for it)]: what the stage needs of the cluster
    # at once, checked when it starts (``runtime.check_resources``).
    demands: Callable = no_demands

    def run(self, cfg, run_dir, force: bool = False) -> dict:
        from biolord_ray.runtime import check_resources

        check_resources(self.name, self.demands(cfg), cfg.ray.autoscaling)
        return importlib.import_module(self.module).run(cfg, run_dir, force=force)

    def needs(self, cfg) -> list[str]:
        """The stages this one reads under ``cfg``."""
        return [i.stage for i in self.inputs if i.when(cfg)]


def _multilingual(cfg) -> bool:
    return cfg.multilingual.enabled


def _engines(cfg) -> list:
    d = cfg.definitions
    if d.gpus_per_engine:
        return [("GPU", d.concurrency * d.gpus_per_engine,
                 "definitions.concurrency x definitions.gpus_per_engine")]
    return [("CPU", d.concurrency, "definitions.concurrency (one CPU per CPU engine)")]


def _encoders(cfg) -> list:
    t = cfg.targets
    if t.num_gpus:
        return [("GPU", t.concurrency * t.num_gpus, "targets.concurrency x targets.num_gpus")]
    return [("CPU", t.concurrency, "targets.concurrency (one CPU per CPU encoder)")]


def _workers(section: str, extra_cpus: str | None = None) -> Callable:
    """A Ray Train run's workers (``section``: the TrainConfig's key), with the CPUs of the
    Tune trial driving it (``extra_cpus``: a key) for the distillation grid."""
    def demands(cfg) -> list:
        tcfg = _section(cfg, section)
        cpus = tcfg.num_workers * tcfg.cpus_per_worker
        keys = f"{section}.num_workers x {section}.cpus_per_worker"
        if extra_cpus:
            cpus += _section(cfg, extra_cpus)
            keys += f" + {extra_cpus}"
        found = [("CPU", cpus, keys)]
        if tcfg.use_gpu:
            found.append(("GPU", tcfg.num_workers, f"{section}.num_workers with "
                                                   f"{section}.use_gpu"))
        return found
    return demands


def _section(cfg, key: str):
    for part in key.split("."):
        cfg = getattr(cfg, part)
    return cfg


_PIPELINE = [
    Stage(INGEST_KG, "biolord_ray.kg.ingest", (),
          ("concepts", "relations", "merges")),
    Stage(EVAL_SETS, "biolord_ray.evaluation.eval_sets", (Input("kg", INGEST_KG),),
          ("names", "definitions", "hierarchy")),
    Stage(GENERATE_DEFINITIONS, "biolord_ray.definitions.generate", (Input("kg", INGEST_KG),),
          ("definitions", "summary"), demands=_engines),
    Stage(BUILD_PAIRS, "biolord_ray.training.pairs",
          (Input("kg", INGEST_KG), Input("eval_sets", EVAL_SETS),
           Input("definitions", GENERATE_DEFINITIONS,
                 when=lambda cfg: cfg.pairs.generated_definitions, optional=True)),
          ("train", "validation")),
    Stage(TRAIN_CONTRASTIVE, "biolord_ray.training.contrastive",
          (Input("pairs", BUILD_PAIRS), Input("eval_sets", EVAL_SETS)),
          ("model", "history", "evaluation"), demands=_workers("contrastive")),
    Stage(TEACHER_TARGETS, "biolord_ray.training.teacher_targets",
          (Input("pairs", BUILD_PAIRS),
           Input("teacher", TRAIN_CONTRASTIVE, when=lambda cfg: cfg.targets.teacher is None)),
          ("train", "validation"), demands=_encoders),
    Stage(DISTILL, "biolord_ray.training.distill",
          (Input("targets", TEACHER_TARGETS), Input("eval_sets", EVAL_SETS)),
          ("trials", "plot"), demands=_workers("distill", extra_cpus="tune.cpus_per_trial")),
    Stage(SOUP, "biolord_ray.training.soup",
          (Input("distill", DISTILL), Input("targets", TEACHER_TARGETS),
           Input("eval_sets", EVAL_SETS)),
          ("model", "model_s", "table", "plot", "evaluation")),
    Stage(PARALLEL_DATA, "biolord_ray.multilingual.parallel_data",
          (Input("kg", INGEST_KG, when=lambda cfg: cfg.multilingual.from_kg),
           Input("teacher", SOUP, when=lambda cfg: cfg.multilingual.teacher is None)),
          ("train", "validation", "quarantine"), enabled=_multilingual),
    Stage(DISTILL_MULTILINGUAL, "biolord_ray.multilingual.distill_multilingual",
          (Input("parallel", PARALLEL_DATA), Input("eval_sets", EVAL_SETS)),
          ("model", "history", "evaluation"), enabled=_multilingual,
          demands=_workers("multilingual.train")),
]
# Last: the report of every stage before it (timings, counts, the models side by side).
_PIPELINE.append(Stage(REPORT, "biolord_ray.report",
                       tuple(Input(s.name, s.name, when=s.enabled) for s in _PIPELINE),
                       ("readme", "timings", "results", "chart")))

STAGES: dict[str, Stage] = {stage.name: stage for stage in _PIPELINE}
NAMES = list(STAGES)


def pipeline(cfg) -> list[str]:
    """The stages the main job runs under ``cfg``, in order."""
    return [stage.name for stage in _PIPELINE if stage.enabled(cfg)]


def prerequisites(names: list[str], cfg) -> list[str]:
    """Every stage that ``names`` need, directly or not, in pipeline order (``names``
    themselves left out)."""
    needed: set[str] = set()
    todo = list(names)
    while todo:
        for need in STAGES[todo.pop()].needs(cfg):
            if need not in needed:
                needed.add(need)
                todo.append(need)
    return [name for name in NAMES if name in needed and name not in names]


def input_identities(name: str, cfg, run_dir) -> dict:
    """The identities (``RunDir.stage_identity``) of the outputs stage ``name`` reads, by
    input key: what its manifest record compares to decide whether it is still current."""
    return {i.key: run_dir.stage_identity(i.stage) for i in STAGES[name].inputs
            if i.when(cfg) and not (i.optional and run_dir.stage_record(i.stage) is None)}


def run(name: str, cfg, run_dir, force: bool = False) -> dict:
    return STAGES[name].run(cfg, run_dir, force=force)


def run_with_prerequisites(names: list[str], cfg, run_dir, force: bool = False,
                           on_record: Callable | None = None) -> dict[str, dict]:
    """Run what ``names`` need when it is not complete, then ``names`` (rerun when ``force``).
    ``on_record(name, record)`` is called after each of ``names``. Returns their records."""
    for name in prerequisites(names, cfg):
        run(name, cfg, run_dir)
    records = {}
    for name in names:
        records[name] = run(name, cfg, run_dir, force=force)
        if on_record:
            on_record(name, records[name])
    return records
