"""Teacher targets: texts/s of the stage's two paths against a bare ``model.encode``.

Each path turns the same training pairs (a run directory's ``build_pairs`` output; the stages
run first if missing) into per-concept targets with the same teacher, in this one process
invocation, next to a bare baseline at the same thread count:

* **bare**: one process, no Ray: the distinct (concept, text) rows computed with pandas,
  ``model.encode`` over them, the per-concept normalised mean with numpy; timed without
  loading the model;
* **in process** (what the stage does under ``targets.ray_min_pairs`` pairs, the embedded
  default's case): ``teacher_targets.targets_in_process``, timed with loading the model;
  compared with a bare run at torch's default threads (this process's CPUs);
* **Ray Data** (what the stage does above it): ``teacher_targets.teacher_targets``: a keyed
  repartition by concept, the distinct texts per concept, ``map_batches`` over ``--actors``
  encoder actors that each get whole concepts and average them, materialised; timed with
  starting its actors (each loads the model), so on small inputs the ratio understates the
  steady rate; compared with a bare run at ``--threads`` (the CPUs one encoder actor gets).
  ``--repeat N`` encodes the pairs N times over (concept ids suffixed) for the Ray side and
  its baseline, to see the rate once the actors' start is spread.

Printed: ``path / bare`` texts/s for each.

Usage::

    .venv/bin/python benchmarks/targets_throughput.py [--run-dir runs/tiny] [--actors 1]
        [--repeat 1]
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run-dir", default="runs/tiny")
    parser.add_argument("--teacher", default="packaged:all-MiniLM-L6-v2")
    parser.add_argument("--actors", type=int, default=1)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--out", default=str(REPO / "benchmarks" / "results"))
    args = parser.parse_args()

    import pyarrow.parquet as pq
    import torch

    from biolord_ray import stages
    from biolord_ray.config import load_config
    from biolord_ray.models.encode import sentence_model_dir
    from biolord_ray.run_dir import RunDir
    from biolord_ray.runtime import init_ray

    cfg = load_config(None, [f"run_dir={args.run_dir}", f"targets.concurrency={args.actors}"])
    run_dir = RunDir(cfg.run_dir)
    init_ray(cfg.ray)
    if not run_dir.stage_record(stages.BUILD_PAIRS):
        # Without LLM definitions (generate_definitions not run): the pairs are only timed.
        for stage in (stages.INGEST_KG, stages.EVAL_SETS, stages.BUILD_PAIRS):
            stages.run(stage, cfg, run_dir)
    table = pq.read_table(run_dir.output(stages.BUILD_PAIRS, "train"), filesystem=run_dir.fs)
    model_dir = sentence_model_dir(args.teacher)
    report = {"teacher": args.teacher, "pairs": table.num_rows, "actors": args.actors,
              "device": f"cpu ({os.cpu_count()} cores)"}

    threads = torch.get_num_threads()
    report["in_process"] = {"bare": run_bare(table, model_dir, cfg.targets.batch_size, threads),
                            "platform": run_in_process(table, model_dir, cfg.targets),
                            "threads": threads}
    print(json.dumps(report, indent=2), flush=True)

    repeated = _repeated(table, args.repeat)
    report["ray_data"] = {
        "bare": run_bare(repeated, model_dir, cfg.targets.batch_size, args.threads),
        "platform": run_pipeline(repeated, model_dir, cfg.targets),
        "threads": args.threads, "repeat": args.repeat}
    for side in ("in_process", "ray_data"):
        report[side]["ratio_platform_over_bare"] = round(
            report[side]["platform"]["texts_per_second"]
            / report[side]["bare"]["texts_per_second"], 3)
    print(json.dumps(report, indent=2))
    Path(args.out).mkdir(parents=True, exist_ok=True)
    out = Path(args.out) / f"targets_throughput_{args.actors}_actors.json"
    out.write_text(json.dumps(report, indent=2))


def _repeated(table, times: int):
    """``table`` ``times`` over, each copy's concepts (and so texts) distinct by id suffix."""
    import pyarrow as pa
    import pyarrow.compute as pc

    return pa.concat_tables(
        table.set_column(table.schema.get_field_index("concept_id"), "concept_id",
                         pc.binary_join_element_wise(table["concept_id"], f"#{i}", ""))
        for i in range(times))


def run_bare(table, model_dir: str, batch_size: int, threads: int) -> dict:
    import numpy as np
    import pandas as pd
    import torch

    from biolord_ray.models.encode import load_sentence_model

    default_threads = torch.get_num_threads()
    torch.set_num_threads(threads)
    model = load_sentence_model(model_dir, device="cpu")
    started = time.perf_counter()
    frame = table.to_pandas()
    names = frame[["concept_id", "anchor"]].set_axis(["concept_id", "text"], axis=1)
    definitions = frame.loc[frame["kind"] == "definition", ["concept_id", "positive"]]
    rows = pd.concat([names, definitions.set_axis(["concept_id", "text"], axis=1)])
    rows = rows.drop_duplicates().reset_index(drop=True)
    vectors = model.encode(rows["text"].tolist(), batch_size=batch_size,
                           normalize_embeddings=True, convert_to_numpy=True)
    targets = {}
    for concept, index in rows.groupby("concept_id").indices.items():
        mean = vectors[index].astype(np.float64).mean(axis=0)
        targets[concept] = mean / np.linalg.norm(mean)
    seconds = time.perf_counter() - started
    torch.set_num_threads(default_threads)
    return {"texts": len(rows), "concepts": len(targets), "seconds": round(seconds, 2),
            "texts_per_second": round(len(rows) / seconds, 1)}


def run_in_process(table, model_dir: str, tcfg) -> dict:
    from biolord_ray.training import teacher_targets

    started = time.perf_counter()
    out = teacher_targets.targets_in_process(table, model_dir, tcfg)
    seconds = time.perf_counter() - started
    return {"texts": out.num_rows, "concepts": len(out["concept_id"].unique()),
            "seconds": round(seconds, 2), "texts_per_second": round(out.num_rows / seconds, 1)}


def run_pipeline(table, model_dir: str, tcfg) -> dict:
    import ray.data

    from biolord_ray.training import teacher_targets

    teacher_targets.check_room_for_shuffles(tcfg)
    source = ray.data.from_arrow(table).materialize()
    started = time.perf_counter()
    out = teacher_targets.teacher_targets(source, model_dir, tcfg).materialize()
    seconds = time.perf_counter() - started
    texts = out.count()
    return {"texts": texts, "concepts": len(out.unique("concept_id")),
            "seconds": round(seconds, 2), "texts_per_second": round(texts / seconds, 1)}


if __name__ == "__main__":
    main()
