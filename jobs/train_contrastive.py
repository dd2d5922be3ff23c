"""Stage train_contrastive alone: the contrastive phase (model -C) on Ray Train + DeepSpeed.

    .venv/bin/python jobs/train_contrastive.py             # embedded default: 2 CPU workers
    .venv/bin/python jobs/train_contrastive.py --set contrastive.epochs=2 --set contrastive.lr=5e-5
    ray job submit --working-dir . -- python jobs/train_contrastive.py --config paper \
        --set kg.path=/data/umls/META

Runs the stages it needs first when they are not complete (ingest_kg, eval_sets,
generate_definitions, build_pairs; generate_definitions not with
--set pairs.generated_definitions=false, the ablation without LLM definitions). Writes
<run_dir>/train_contrastive/: model/ (a sentence-transformers directory with a model card),
history.csv/.png and evaluation/ (base vs trained model). Interrupted runs resume from the
last checkpoint.
"""

import json

from biolord_ray.cli import config_from_args, stage_parser
from biolord_ray.definitions import generate
from biolord_ray.evaluation import kg_sets
from biolord_ray.kg import ingest
from biolord_ray.run_dir import RunDir
from biolord_ray.runtime import init_ray
from biolord_ray.training import contrastive, pairs

if __name__ == "__main__":
    args = stage_parser(__doc__.splitlines()[0]).parse_args()
    cfg = config_from_args(args)
    run_dir = RunDir(cfg.run_dir)
    init_ray(cfg.ray)
    needed = (ingest, kg_sets, generate, pairs) if cfg.pairs.generated_definitions \
        else (ingest, kg_sets, pairs)
    for stage in needed:
        stage.run(cfg, run_dir)
    record = contrastive.run(cfg, run_dir, force=args.force)
    print(json.dumps({"run_dir": run_dir.uri, "stage": contrastive.STAGE, **record}, indent=2))
    print(f"model: {run_dir.output(contrastive.STAGE, 'model')}")
