"""The ``biolord-ray`` command, installed with the package; the files in ``jobs/`` call it
(``ray job submit -- python jobs/full_pipeline.py`` runs ``biolord-ray run``).

Each command runs its stages through the registry (``biolord_ray.stages``): what they need
first when it is not complete, then the command's own stages (rerun with ``--force``).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import textwrap
from collections.abc import Callable
from dataclasses import dataclass

from biolord_ray import stages
from biolord_ray.config import ConfigError, PipelineConfig, available_presets, load_config


@dataclass(frozen=True)
class Command:
    doc: str                    # --help: the first line, then usage and details as written
    run: Callable[[argparse.Namespace], None]
    add_arguments: Callable[[argparse.ArgumentParser], None] = lambda parser: None


# ---------------------------------------------------------------------------------------
# Shared plumbing

def add_config_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    parser.add_argument("--config", default=None,
                        help=f"preset ({', '.join(available_presets())}) or YAML file; "
                             "default: the embedded default")
    parser.add_argument("--set", dest="overrides", action="append", default=[],
                        metavar="KEY=VALUE", help="override a config value, e.g. "
                        "--set kg.max_concepts=500 (repeatable)")
    parser.add_argument("--run-dir", default=None,
                        help="run directory (local path or URI); overrides run_dir")
    parser.add_argument("--force", action="store_true",
                        help="rerun even if the stage is complete for this config and inputs")
    return parser


def config_from_args(args: argparse.Namespace) -> PipelineConfig:
    """The validated config, or exit with the config error (before any Ray work)."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    overrides = list(args.overrides)
    if args.run_dir:
        overrides.append(f"run_dir={args.run_dir}")
    try:
        return load_config(args.config, overrides)
    except ConfigError as err:
        sys.exit(f"config error: {err}")


def _help(doc: str) -> dict:
    summary, _, details = doc.strip().partition("\n")
    return {"description": summary, "epilog": textwrap.dedent(details),
            "formatter_class": argparse.RawDescriptionHelpFormatter}


def _start(cfg: PipelineConfig):
    """The run directory, with Ray started, for a command that runs stages."""
    from biolord_ray.run_dir import RunDir
    from biolord_ray.runtime import init_ray

    run_dir = RunDir(cfg.run_dir)
    init_ray(cfg.ray)
    return run_dir


def _print_record(name: str, record: dict) -> None:
    """One line per stage (its manifest record holds the rest)."""
    print(json.dumps({"stage": name, **{key: record[key] for key in (
        "status", "started_at", "seconds", "counts")}}), flush=True)


def _stages_command(names: list[str], *outputs: tuple[str, str, str]):
    """A command that runs ``names`` after what they need and prints where ``outputs``
    (label, stage, output) are."""
    def run(args: argparse.Namespace) -> None:
        cfg = config_from_args(args)
        run_dir = _start(cfg)
        stages.run_with_prerequisites(names, cfg, run_dir, force=args.force,
                                      on_record=_print_record)
        print(f"run directory: {run_dir.uri}")
        for label, stage, output in outputs:
            print(f"{label}: {run_dir.output(stage, output)}")
    return run


# ---------------------------------------------------------------------------------------
# biolord-ray run: the whole pipeline

RUN_DOC = r"""The main job: every stage of the pipeline in order, driven by one config.

    biolord-ray run                                   # embedded default -> runs/tiny
    biolord-ray run --from distill                    # rerun distill and what follows
    biolord-ray run --only soup                       # rerun one stage
    biolord-ray run --set \
        'eval.benchmarks=[{name: stsb, preset: stsb, path: ../shared/data/eval/stsb-dev.tsv}]'
    ray job submit --working-dir . -- python jobs/full_pipeline.py --config paper \
        --set kg.path=/data/umls/META --run-dir s3://bucket/biolord

Stages already complete for the same config and inputs are skipped, so a rerun resumes.
Stages: ingest_kg, eval_sets (the held-out KG evaluation sets), generate_definitions,
build_pairs, train_contrastive (model -C), teacher_targets, distill (the Ray Tune grid of
self-distillation runs), soup (model -S and the soup), and with --set multilingual.enabled=true
parallel_data and distill_multilingual (model -M, biolord-ray multilingual); last, report
(<run_dir>/report/README.md).
"""
MULTILINGUAL = (stages.PARALLEL_DATA, stages.DISTILL_MULTILINGUAL)  # multilingual.enabled


def _run_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--from", dest="from_stage", choices=stages.NAMES,
                        help="rerun this stage and every later one")
    parser.add_argument("--only", choices=stages.NAMES,
                        help="run only this stage (rerun if complete); its inputs must exist")


def forced_stages(args: argparse.Namespace) -> set[str]:
    """The stages to rerun even when complete: --force (all), --from STAGE (it and every
    later one), --only STAGE."""
    if args.force:
        return set(stages.NAMES)
    if args.from_stage:
        return set(stages.NAMES[stages.NAMES.index(args.from_stage):])
    return {args.only} if args.only else set()


def run_pipeline(args: argparse.Namespace) -> None:
    if args.from_stage and args.only:
        sys.exit("--from and --only exclude each other")
    cfg = config_from_args(args)
    if {args.only, args.from_stage} & set(MULTILINGUAL) and not cfg.multilingual.enabled:
        sys.exit("the multilingual stages run with --set multilingual.enabled=true")
    run_dir = _start(cfg)
    forced = forced_stages(args)
    for name in stages.pipeline(cfg):
        if args.only and name != args.only:
            continue
        _print_record(name, stages.run(name, cfg, run_dir, force=name in forced))
    print(f"run directory: {run_dir.uri} (manifest: {run_dir.path('manifest.json')})")
    if run_dir.stage_record(stages.REPORT):
        print(f"report: {run_dir.output(stages.REPORT, 'readme')}")


# ---------------------------------------------------------------------------------------
# One command per part of the pipeline

INGEST_DOC = r"""Stage ingest_kg: read the configured KG into <run_dir>/ingest_kg/.

    biolord-ray ingest                                # embedded default: bundled MONDO
    biolord-ray ingest --set kg.format=hpo --set kg.max_concepts=null
    ray job submit --working-dir . -- python jobs/ingest_kg.py --config my_umls.yaml
"""

GENERATE_DOC = r"""Stage generate_definitions: an LLM (vLLM in Ray Data) defines each concept.

    biolord-ray generate                              # embedded default: SmolLM2 on vLLM CPU
    biolord-ray generate --set kg.max_concepts=50 --run-dir runs/small
    ray job submit --working-dir . -- python jobs/generate_definitions.py --config paper \
        --set kg.path=/data/umls/META

Runs ingest_kg first if it is not complete. A rerun after a crash or kill resumes: concepts
already defined by the same model and template are not generated again.
"""

TRAIN_DOC = r"""Stage train_contrastive: the contrastive phase (model -C) on Ray Train + DeepSpeed.

    biolord-ray train                                 # embedded default: 2 CPU workers
    biolord-ray train --set contrastive.epochs=2 --set contrastive.lr=5e-5
    ray job submit --working-dir . -- python jobs/train_contrastive.py --config paper \
        --set kg.path=/data/umls/META

Runs the stages it needs first when they are not complete (ingest_kg, eval_sets,
generate_definitions, build_pairs; generate_definitions not with
--set pairs.generated_definitions=false, the ablation without LLM definitions). Writes
<run_dir>/train_contrastive/: model/ (a sentence-transformers directory with a model card),
history.csv/.png and evaluation/ (base vs trained model). Interrupted runs resume from the
last checkpoint.
"""

DISTILL_DOC = r"""Stages teacher_targets, distill, soup: distillation on Ray Tune, then the soup.

    biolord-ray distill                               # embedded default: 2 trials, CPU
    biolord-ray distill --set tune.seeds=[0,1,2] --set soup.method=uniform
    ray job submit --working-dir . -- python jobs/distill_tune_soup.py --config paper \
        --set kg.path=/data/umls/META

Runs the stages it needs first when they are not complete (ingest_kg, eval_sets,
generate_definitions, build_pairs, train_contrastive). Writes <run_dir>/teacher_targets/
(Parquet), <run_dir>/distill/ (trials.csv/.png, each trial's model) and <run_dir>/soup/
(model/ = the soup, model_s/ = the best trial, soup.csv/.png, evaluation/). An interrupted
sweep resumes (Tuner.restore) on the next run.
"""

MULTILINGUAL_DOC = r"""Stages parallel_data, distill_multilingual: a multilingual student (-M).

    biolord-ray multilingual                          # embedded default: teacher = the soup
    biolord-ray multilingual --set multilingual.teacher=MODEL     # spec or path
    ray job submit --working-dir . -- python jobs/distill_multilingual.py --config paper \
        --set kg.path=/data/umls/META

Parallel text: the KG's names in multilingual.languages (UMLS other-LAT rows, SNOMED CT
descriptions and kg.extensions, OBO synonyms tagged {lang="xx"}; keep them at ingest with
kg.languages) and multilingual.files (TSV/Parquet with
source, target, language[, concept_id]; the embedded default ships a disease glossary).
Runs the stages it needs first when they are not complete: ingest_kg and eval_sets, and the
whole English pipeline up to soup when the teacher is this run's model. Writes
<run_dir>/parallel_data/ (Parquet, quarantine/) and <run_dir>/distill_multilingual/ (model/,
history.csv/.png, evaluation/ with translation accuracy and MSE per language).
"""

REPORT_DOC = r"""Stage report: the run's report, after the stages before it (run when missing).

    biolord-ray report --run-dir runs/tiny            # the stages are complete: the report only
    biolord-ray report --run-dir runs/tiny --force    # write the report again

Writes <run_dir>/report/: README.md (where each model is, stage timings and counts),
results.md/.json/.png (base, -C, -S and both soups on the full evaluation suite) and
timings.png.
"""


# ---------------------------------------------------------------------------------------
# biolord-ray evaluate

EVALUATE_DOC = r"""Compare models on similarity files, KG linking, definitions and the hierarchy.

    biolord-ray evaluate packaged:all-MiniLM-L6-v2 packaged:all-mpnet-base-v2
    biolord-ray evaluate runs/tiny/contrastive/model --fast --suite dev
    biolord-ray evaluate /models/BioLORD-2023 --benchmark umnsrs-sim=UMNSRS_sim.csv \
        --benchmark biosses=biosses.tsv --out reports/biolord
    biolord-ray evaluate packaged:all-MiniLM-L6-v2 \
        --benchmark stsb=../shared/data/eval/stsb-dev.tsv     # + general STS (STS Benchmark)
    ray job submit --working-dir . -- python jobs/evaluate.py packaged:all-MiniLM-L6-v2

MODEL: a sentence-transformers directory, a platform checkpoint/export, packaged:NAME or a
hub id. The kg suite reads the run directory's eval_sets stage (running ingest_kg and
eval_sets first when they are not complete). Writes results.json, results.md, results.png.
"""


def _evaluate_arguments(parser: argparse.ArgumentParser) -> None:
    from biolord_ray.config import EVAL_SUITES
    from biolord_ray.evaluation.benchmark_files import PRESETS

    parser.add_argument("models", nargs="+", metavar="MODEL")
    parser.add_argument("--benchmark", action="append", default=[], metavar="PRESET=PATH",
                        help=f"add a file benchmark (presets: {', '.join(PRESETS)}); "
                             "repeatable")
    parser.add_argument("--suite", action="append", choices=EVAL_SUITES,
                        help="run only these groups (repeatable; default: eval.suites)")
    parser.add_argument("--fast", action="store_true",
                        help="the fast subset used for validation during training (seconds)")
    parser.add_argument("--out", default=None,
                        help="report folder, a local path or a URI (default: "
                             "<run_dir>/evaluation)")


def file_benchmarks(items: list[str]) -> list:
    from pathlib import Path

    from biolord_ray.config import BenchmarkFile
    from biolord_ray.evaluation.benchmark_files import PRESETS

    benchmarks = []
    for item in items:
        preset, sep, path = item.partition("=")
        if not sep or preset not in PRESETS:
            sys.exit(f"--benchmark {item!r}: expected PRESET=PATH with PRESET one of "
                     f"{', '.join(PRESETS)}")
        if not Path(path).expanduser().is_file():
            sys.exit(f"--benchmark {item!r}: no such file: {path}")
        name = preset
        if any(b.name == name for b in benchmarks):
            name = f"{preset}-{Path(path).stem}"
        benchmarks.append(BenchmarkFile(name=name, path=path, preset=preset))
    return benchmarks


def evaluate(args: argparse.Namespace) -> None:
    from biolord_ray.evaluation import EvalFormatError, build_suite, evaluate_models
    from biolord_ray.evaluation.report import markdown
    from biolord_ray.run_dir import RunDir
    from biolord_ray.runtime import init_ray

    cfg = config_from_args(args)
    cfg.eval.benchmarks += file_benchmarks(args.benchmark)
    suites = list(args.suite or cfg.eval.suites)
    if args.benchmark and "files" not in suites:
        suites.append("files")
    run_dir = RunDir(cfg.run_dir)
    if "kg" in suites:
        init_ray(cfg.ray)
        stages.run_with_prerequisites([stages.EVAL_SETS], cfg, run_dir, force=args.force)
    try:
        suite = build_suite(cfg.eval, suites, run_dir, fast=args.fast)
    except (EvalFormatError, ValueError) as err:
        sys.exit(f"evaluation error: {err}")
    report = evaluate_models(args.models, suite, cfg)
    locations = save_report(report, args.out, run_dir)
    print(markdown(report))
    print(json.dumps(locations))


def save_report(report: dict, out: str | None, run_dir) -> dict[str, str]:
    """Write the report to ``out`` (a local folder or a URI), else to <run_dir>/evaluation on
    the run directory's filesystem: an s3:// run directory's paths ("bucket/run/...") read
    as local paths would land under the working directory. Returns where each file went."""
    import os

    import pyarrow.fs as pafs

    from biolord_ray.evaluation.report import publish_report

    if out is None:
        filesystem, folder = run_dir.fs, run_dir.path("evaluation")
        shown = f"{run_dir.uri.rstrip('/')}/evaluation"
    else:
        shown = out if "://" in out else os.path.abspath(os.path.expanduser(out))
        filesystem, folder = pafs.FileSystem.from_uri(shown)
    names = publish_report(report, filesystem, folder)
    return {kind: f"{shown.rstrip('/')}/{name}" for kind, name in names.items()}


# ---------------------------------------------------------------------------------------

COMMANDS = {
    "run": Command(RUN_DOC, run_pipeline, _run_arguments),
    "ingest": Command(INGEST_DOC, _stages_command([stages.INGEST_KG])),
    "generate": Command(GENERATE_DOC, _stages_command(
        [stages.GENERATE_DEFINITIONS])),
    "train": Command(TRAIN_DOC, _stages_command(
        [stages.TRAIN_CONTRASTIVE], ("model", stages.TRAIN_CONTRASTIVE, "model"))),
    "distill": Command(DISTILL_DOC, _stages_command(
        [stages.TEACHER_TARGETS, stages.DISTILL, stages.SOUP],
        ("model (soup)", stages.SOUP, "model"), ("model (best trial)", stages.SOUP, "model_s"))),
    "multilingual": Command(MULTILINGUAL_DOC, _stages_command(
        [stages.PARALLEL_DATA, stages.DISTILL_MULTILINGUAL],
        ("model (multilingual)", stages.DISTILL_MULTILINGUAL, "model"))),
    "evaluate": Command(EVALUATE_DOC, evaluate, _evaluate_arguments),
    "report": Command(REPORT_DOC, _stages_command(
        [stages.REPORT], ("report", stages.REPORT, "readme"))),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="biolord-ray", description="Train BioLORD-2023-style biomedical embedding models "
                                        "from a knowledge graph, on Ray.")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, command in COMMANDS.items():
        sub = commands.add_parser(name, help=command.doc.splitlines()[0], **_help(command.doc))
        add_config_arguments(sub)
        command.add_arguments(sub)
        sub.set_defaults(handler=command.run)
    return parser


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    args.handler(args)
