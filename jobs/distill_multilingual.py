"""Stages parallel_data and distill_multilingual: a multilingual student from the English
model (BioLORD-2023-M).

    .venv/bin/python jobs/distill_multilingual.py        # embedded default: teacher = the soup
    .venv/bin/python jobs/distill_multilingual.py --set multilingual.teacher=MODEL  # spec or path
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

import json

from biolord_ray.cli import config_from_args, stage_parser
from biolord_ray.definitions import generate
from biolord_ray.evaluation import kg_sets
from biolord_ray.kg import ingest
from biolord_ray.multilingual import parallel, student
from biolord_ray.run_dir import RunDir
from biolord_ray.runtime import init_ray
from biolord_ray.training import contrastive, distill, pairs, soup, targets

if __name__ == "__main__":
    args = stage_parser(__doc__.splitlines()[0]).parse_args()
    cfg = config_from_args(args)
    run_dir = RunDir(cfg.run_dir)
    init_ray(cfg.ray)
    needed = [ingest, kg_sets]
    if cfg.multilingual.teacher is None:  # the teacher is this run's soup
        needed += [generate, pairs, contrastive, targets, distill, soup]
    for stage in needed:
        stage.run(cfg, run_dir)
    for stage in (parallel, student):
        record = stage.run(cfg, run_dir, force=args.force)
        print(json.dumps({"stage": stage.STAGE, "status": record["status"],
                          "seconds": record["seconds"], "counts": record["counts"]}))
    print(f"model (multilingual): {run_dir.output(student.STAGE, 'model')}")
