"""Evaluate embedding models side by side: similarity files, KG linking, definitions, hierarchy.

    .venv/bin/python jobs/evaluate.py packaged:all-MiniLM-L6-v2 packaged:all-mpnet-base-v2
    .venv/bin/python jobs/evaluate.py runs/tiny/contrastive/model --fast --suite dev
    .venv/bin/python jobs/evaluate.py /models/BioLORD-2023 --benchmark umnsrs-sim=UMNSRS_sim.csv \
        --benchmark biosses=biosses.tsv --out reports/biolord
    .venv/bin/python jobs/evaluate.py packaged:all-MiniLM-L6-v2 \
        --benchmark stsb=../shared/data/eval/stsb-dev.tsv     # + general STS (STS Benchmark)

MODEL: a sentence-transformers directory, a platform checkpoint/export, packaged:NAME or a
hub id. The kg suite reads the run directory's eval_sets stage (running ingest_kg and
eval_sets first when they are not complete). Writes results.json, results.md, results.png.
"""

import json
import os
import sys
from pathlib import Path

import pyarrow.fs as pafs

from biolord_ray.cli import config_from_args, stage_parser
from biolord_ray.config import EVAL_SUITES, BenchmarkFile
from biolord_ray.evaluation import (
    PRESETS,
    EvalFormatError,
    build_suite,
    evaluate_models,
    kg_sets,
)
from biolord_ray.evaluation.report import markdown, publish_report
from biolord_ray.kg import ingest
from biolord_ray.run_dir import RunDir
from biolord_ray.runtime import init_ray


def parse_args():
    parser = stage_parser(__doc__.splitlines()[0])
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
    return parser.parse_args()


def file_benchmarks(items: list[str]) -> list[BenchmarkFile]:
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


def save_report(report: dict, out: str | None, run_dir: RunDir) -> dict[str, str]:
    """Write the report to ``out`` (a local folder or a URI), else to <run_dir>/evaluation on
    the run directory's filesystem: an s3:// run directory's paths ("bucket/run/...") read
    as local paths would land under the working directory. Returns where each file went."""
    if out is None:
        filesystem, folder = run_dir.fs, run_dir.path("evaluation")
        shown = f"{run_dir.uri.rstrip('/')}/evaluation"
    else:
        shown = out if "://" in out else os.path.abspath(os.path.expanduser(out))
        filesystem, folder = pafs.FileSystem.from_uri(shown)
    names = publish_report(report, filesystem, folder)
    return {kind: f"{shown.rstrip('/')}/{name}" for kind, name in names.items()}


if __name__ == "__main__":
    args = parse_args()
    cfg = config_from_args(args)
    cfg.eval.benchmarks += file_benchmarks(args.benchmark)
    suites = args.suite or cfg.eval.suites
    if args.benchmark and "files" not in suites:
        suites.append("files")
    run_dir = RunDir(cfg.run_dir)
    if "kg" in suites:
        init_ray(cfg.ray)
        ingest.run(cfg, run_dir)
        kg_sets.run(cfg, run_dir, force=args.force)
    try:
        suite = build_suite(cfg.eval, suites, run_dir, fast=args.fast)
    except (EvalFormatError, ValueError) as err:
        sys.exit(f"evaluation error: {err}")
    report = evaluate_models(args.models, suite, cfg)
    locations = save_report(report, args.out, run_dir)
    print(markdown(report))
    print(json.dumps(locations))
