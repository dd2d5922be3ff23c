"""The main job: every stage of the pipeline in order, driven by one config.

    .venv/bin/python jobs/full_pipeline.py                    # embedded default -> runs/tiny
    ray job submit --working-dir . -- python jobs/full_pipeline.py --config paper \
        --set kg.path=/data/umls/META --run-dir s3://bucket/biolord

Stages already complete for the same config and inputs are skipped, so a rerun resumes.
Stages: ingest_kg, eval_sets (the held-out KG evaluation sets), generate_definitions,
build_pairs, train_contrastive (model -C), teacher_targets, distill (the Ray Tune grid of
self-distillation runs), soup (model -S and the soup).
"""

import json

from biolord_ray.cli import config_from_args, stage_parser
from biolord_ray.definitions import generate
from biolord_ray.evaluation import kg_sets
from biolord_ray.kg import ingest
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
}

if __name__ == "__main__":
    args = stage_parser(__doc__.splitlines()[0]).parse_args()
    cfg = config_from_args(args)
    run_dir = RunDir(cfg.run_dir)
    init_ray(cfg.ray)
    for name, run in STAGES.items():
        record = run(cfg, run_dir, force=args.force)
        print(json.dumps({"stage": name, "status": record["status"],
                          "seconds": record["seconds"], "counts": record["counts"]}))
    print(f"run directory: {run_dir.uri} (manifest: {run_dir.path('manifest.json')})")
