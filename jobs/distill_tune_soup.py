"""Stages teacher_targets, distill and soup: self-distillation on a Ray Tune grid, then the
model soup (BioLORD-2023-S and BioLORD-2023).

    .venv/bin/python jobs/distill_tune_soup.py             # embedded default: 4 trials, CPU
    .venv/bin/python jobs/distill_tune_soup.py --set tune.seeds=[0,1,2] --set tune.soup=uniform
    ray job submit --working-dir . -- python jobs/distill_tune_soup.py --config paper \
        --set kg.path=/data/umls/META

Runs the stages it needs first when they are not complete (ingest_kg, eval_sets,
generate_definitions, build_pairs, train_contrastive). Writes <run_dir>/teacher_targets/
(Parquet), <run_dir>/distill/ (trials.csv/.png, each trial's model) and <run_dir>/soup/
(model/ = the soup, model_s/ = the best trial, soup.csv/.png, evaluation/). An interrupted
sweep resumes (Tuner.restore) on the next run.
"""

import json

from biolord_ray.cli import config_from_args, stage_parser
from biolord_ray.definitions import generate
from biolord_ray.evaluation import kg_sets
from biolord_ray.kg import ingest
from biolord_ray.run_dir import RunDir
from biolord_ray.runtime import init_ray
from biolord_ray.training import contrastive, distill, pairs, soup, targets

if __name__ == "__main__":
    args = stage_parser(__doc__.splitlines()[0]).parse_args()
    cfg = config_from_args(args)
    run_dir = RunDir(cfg.run_dir)
    init_ray(cfg.ray)
    needed = [ingest, kg_sets, generate, pairs] + ([contrastive] if cfg.targets.teacher is None
                                                   else [])
    for stage in needed:
        stage.run(cfg, run_dir)
    for stage in (targets, distill, soup):
        record = stage.run(cfg, run_dir, force=args.force)
        print(json.dumps({"stage": stage.STAGE, "status": record["status"],
                          "seconds": record["seconds"], "counts": record["counts"]}))
    print(f"model (soup): {run_dir.output(soup.STAGE, 'model')}")
    print(f"model (best trial): {run_dir.output(soup.STAGE, 'model_s')}")
