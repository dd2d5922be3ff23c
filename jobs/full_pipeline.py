"""The main job: every stage of the pipeline in order, driven by one config.

    .venv/bin/python jobs/full_pipeline.py                    # embedded default -> runs/tiny
    .venv/bin/python jobs/full_pipeline.py --from distill     # rerun distill and what follows
    .venv/bin/python jobs/full_pipeline.py --only soup        # rerun one stage
    .venv/bin/python jobs/full_pipeline.py --set \
        'eval.benchmarks=[{name: stsb, preset: stsb, path: ../shared/data/eval/stsb-dev.tsv}]'
    ray job submit --working-dir . -- python jobs/full_pipeline.py --config paper \
        --set kg.path=/data/umls/META --run-dir s3://bucket/biolord

Stages already complete for the same config and inputs are skipped, so a rerun resumes.
Stages: ingest_kg, eval_sets (the held-out KG evaluation sets), generate_definitions,
build_pairs, train_contrastive (model -C), teacher_targets, distill (the Ray Tune grid of
self-distillation runs), soup (model -S and the soup), and with --set multilingual.enabled=true
parallel_data and distill_multilingual (model -M, jobs/distill_multilingual.py); last, report
(<run_dir>/report/README.md).
"""

import json

from biolord_ray import report
from biolord_ray.cli import config_from_args, stage_parser
from biolord_ray.definitions import generate
from biolord_ray.evaluation import kg_sets
from biolord_ray.kg import ingest
from biolord_ray.multilingual import parallel, student
from biolord_ray.run_dir import RunDir
from biolord_ray.runtime import init_ray
from biolord_ray.training import contrastive, distill, pairs, soup, targets

STAGES = {
    ingest.STAGE: ingest.run,
    kg_sets.STAGE: kg_sets.run,
    generate.STAGE: generate.run,
    pairs.STAGE: pairs.run,
    contrastive.STAGE: contrastive.run,
    targets.STAGE: targets.run,
    distill.STAGE: distill.run,
    soup.STAGE: soup.run,
    parallel.STAGE: parallel.run,
    student.STAGE: student.run,
}
MULTILINGUAL = (parallel.STAGE, student.STAGE)  # run when multilingual.enabled
# Last: the report of every stage above (timings, counts, base vs -C vs -S vs soup).
STAGES[report.STAGE] = lambda cfg, run_dir, force=False: report.run(
    cfg, run_dir, [n for n in pipeline_stages(cfg) if n != report.STAGE], force=force)


def pipeline_stages(cfg) -> list[str]:
    return [name for name in STAGES if cfg.multilingual.enabled or name not in MULTILINGUAL]


def forced_stages(args) -> set[str]:
    """The stages to rerun even when complete: --force (all), --from STAGE (it and every
    later one), --only STAGE."""
    names = list(STAGES)
    if args.force:
        return set(names)
    if args.from_stage:
        return set(names[names.index(args.from_stage):])
    return {args.only} if args.only else set()


if __name__ == "__main__":
    parser = stage_parser(__doc__.splitlines()[0])
    parser.add_argument("--from", dest="from_stage", choices=list(STAGES),
                        help="rerun this stage and every later one")
    parser.add_argument("--only", choices=list(STAGES),
                        help="run only this stage (rerun if complete); its inputs must exist")
    args = parser.parse_args()
    if args.from_stage and args.only:
        parser.error("--from and --only exclude each other")
    cfg = config_from_args(args)
    if {args.only, args.from_stage} & set(MULTILINGUAL) and not cfg.multilingual.enabled:
        parser.error("the multilingual stages run with --set multilingual.enabled=true")
    run_dir = RunDir(cfg.run_dir)
    init_ray(cfg.ray)
    forced = forced_stages(args)
    for name in pipeline_stages(cfg):
        if args.only and name != args.only:
            continue
        record = STAGES[name](cfg, run_dir, force=name in forced)
        print(json.dumps({"stage": name, "status": record["status"],
                          "seconds": record["seconds"], "counts": record["counts"]}))
    print(f"run directory: {run_dir.uri} (manifest: {run_dir.path('manifest.json')})")
    if run_dir.stage_record(report.STAGE):
        print(f"report: {run_dir.output(report.STAGE, 'readme')}")
