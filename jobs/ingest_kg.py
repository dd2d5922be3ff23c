"""Stage ingest_kg alone: read the configured KG into <run_dir>/ingest_kg/{concepts,relations}.

    .venv/bin/python jobs/ingest_kg.py                       # embedded default: bundled MONDO
    .venv/bin/python jobs/ingest_kg.py --set kg.format=hpo --set kg.max_concepts=null
    ray job submit --working-dir . -- python jobs/ingest_kg.py --config my_umls.yaml
"""

import json

from biolord_ray.cli import config_from_args, stage_parser
from biolord_ray.kg import ingest
from biolord_ray.run_dir import RunDir
from biolord_ray.runtime import init_ray

if __name__ == "__main__":
    args = stage_parser(__doc__.splitlines()[0]).parse_args()
    cfg = config_from_args(args)
    run_dir = RunDir(cfg.run_dir)
    init_ray(cfg.ray)
    record = ingest.run(cfg, run_dir, force=args.force)
    print(json.dumps({"run_dir": run_dir.uri, "stage": ingest.STAGE, **record}, indent=2))
