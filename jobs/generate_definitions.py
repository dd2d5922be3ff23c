"""Stage generate_definitions alone: an LLM (vLLM in Ray Data) writes a definition per concept.

    .venv/bin/python jobs/generate_definitions.py          # embedded default: SmolLM2 on vLLM CPU
    .venv/bin/python jobs/generate_definitions.py --set kg.max_concepts=50 --run-dir runs/small
    ray job submit --working-dir . -- python jobs/generate_definitions.py --config paper \
        --set kg.path=/data/umls/META

Runs ingest_kg first if it is not complete. A rerun after a crash or kill resumes: concepts
already defined by the same model and template are not generated again.
"""

import json

from biolord_ray.cli import config_from_args, stage_parser
from biolord_ray.definitions import generate
from biolord_ray.kg import ingest
from biolord_ray.run_dir import RunDir
from biolord_ray.runtime import init_ray

if __name__ == "__main__":
    args = stage_parser(__doc__.splitlines()[0]).parse_args()
    cfg = config_from_args(args)
    run_dir = RunDir(cfg.run_dir)
    init_ray(cfg.ray)
    ingest.run(cfg, run_dir)
    record = generate.run(cfg, run_dir, force=args.force)
    print(json.dumps({"run_dir": run_dir.uri, "stage": generate.STAGE, **record}, indent=2))
