"""The recipe at medium scale: what each phase does (the fidelity table) and what it costs.

Runs ``jobs/full_pipeline.py --config medium`` (target: 90 minutes on a 2-core CPU machine)
into ``--run-dir`` (kept, and resumed when rerun), then, with ``--ablation``, the contrastive
phase again with the same steps but without the LLM's definitions
(``pairs.generated_definitions=false``, in a run directory of its own). It prints and writes
(``benchmarks/results/recipe_medium.{json,md}``):

* one row per model (base, -C, -C without LLM definitions, -S, greedy and uniform soups),
  one column per benchmark of the full suite (dev files, general STS, KG tasks), the
  biomedical mean;
* each stage's seconds and the total, against a bare ``model.encode`` of 4,096 MONDO names
  measured in the same invocation (``total / baseline`` separates a slower code path from a
  slower or busier machine).

Usage::

    .venv/bin/python benchmarks/recipe_medium.py [--ablation] [--run-dir runs/medium]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

from pipeline_wall_time import bare_encode_seconds

from biolord_ray.training.contrastive import MODEL_LABEL

REPO = Path(__file__).resolve().parents[1]
TARGET_SECONDS = 90 * 60
# Table rows in the recipe's order (results.json stores models with sorted keys).
ROW_ORDER = ["base", "BioLORD-C (", "BioLORD-C without", "BioLORD-S", "BioLORD (soup, greedy",
             "BioLORD (soup, uniform"]


def run_job(job: str, run_dir: Path, overrides: list[str]) -> float:
    command = [sys.executable, str(REPO / "jobs" / job), "--config", "medium", "--run-dir",
               str(run_dir), *[arg for o in overrides for arg in ("--set", o)]]
    started = time.perf_counter()
    subprocess.run(command, check=True, cwd=REPO)
    return time.perf_counter() - started


def read_results(path: Path) -> dict:
    return json.loads(path.read_text())


def fidelity_table(run_dir: Path, ablation_dir: Path | None) -> tuple[list[str], list[list]]:
    """(benchmark columns, rows of [model, score per benchmark..., biomedical mean])."""
    report = read_results(run_dir / "report" / "results.json")
    models = dict(report["models"])
    if ablation_dir is not None:
        trained = read_results(ablation_dir / "train_contrastive" / "evaluation" /
                               "results.json")["models"]
        models["BioLORD-C without LLM definitions (ablation)"] = trained[MODEL_LABEL]
    names = report["benchmarks"]
    first = {n: next(m["benchmarks"][n] for m in models.values() if n in m["benchmarks"])
             for n in names}
    general = [n for n in names if first[n].get("domain") == "general"]
    biomedical = [n for n in names if n not in general]
    columns = biomedical + ["biomedical mean"] + [f"general STS: {n}" for n in general]
    rows = []
    order = sorted(models, key=lambda label: next(
        (i for i, prefix in enumerate(ROW_ORDER) if label.startswith(prefix)), len(ROW_ORDER)))
    for label in order:
        model = models[label]
        scores = {n: model["benchmarks"][n][first[n]["main_metric"]]
                  for n in names if n in model["benchmarks"]}
        mean = sum(scores[n] for n in biomedical) / len(biomedical)
        rows.append([label, *(scores.get(n) for n in biomedical), mean,
                     *(scores.get(n) for n in general)])
    return columns, rows


def markdown(columns: list[str], rows: list[list], stages: dict, total: float,
             measured: bool) -> str:
    lines = ["| model | " + " | ".join(columns) + " |", "|---|" + "---:|" * len(columns)]
    lines += ["| " + " | ".join([row[0], *(f"{v:.4f}" if v is not None else "" for v in row[1:])])
              + " |" for row in rows]
    lines += ["", "| stage | seconds |", "|---|---:|"]
    lines += [f"| {name} | {seconds:.1f} |" for name, seconds in stages.items()]
    what = "with Ray start-up and driver" if measured else "sum of the stages"
    lines.append(f"| **total ({what})** | **{total:.1f}** |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run-dir", default=str(REPO / "runs" / "medium"))
    parser.add_argument("--ablation", action="store_true",
                        help="also train -C without the generated definitions (same steps)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="config override passed to the jobs")
    parser.add_argument("--out", default=str(REPO / "benchmarks" / "results"))
    parser.add_argument("--no-run", action="store_true",
                        help="only read the run directories (total: the stages' seconds)")
    args = parser.parse_args()

    baseline = bare_encode_seconds()
    print(json.dumps({"bare_encode_seconds": round(baseline, 2)}), flush=True)
    run_dir = Path(args.run_dir).resolve()
    ablation_dir = run_dir.with_name(run_dir.name + "-without-llm-definitions") \
        if args.ablation else None
    total = None
    if not args.no_run:
        total = run_job("full_pipeline.py", run_dir, args.set)
        if ablation_dir is not None:
            run_job("train_contrastive.py", ablation_dir,
                    [*args.set, "pairs.generated_definitions=false"])

    manifest = read_results(run_dir / "manifest.json")
    records = sorted(manifest["stages"].items(), key=lambda item: item[1]["started_at"])
    stages = {name: record["seconds"] for name, record in records}
    total = total or sum(stages.values())
    columns, rows = fidelity_table(run_dir, ablation_dir)
    result = {"run_dir": str(run_dir), "overrides": args.set, "stages_seconds": stages,
              "total_seconds": round(total, 1), "target_seconds": TARGET_SECONDS,
              "total_over_target": round(total / TARGET_SECONDS, 3),
              "bare_encode_seconds": round(baseline, 2),
              "total_over_bare_encode": round(total / baseline, 1),
              "columns": columns, "rows": rows}
    table = markdown(columns, rows, stages, total, measured=not args.no_run)
    print(table)
    print(f"total {total:.0f} s ({total / 60:.1f} min), target {TARGET_SECONDS // 60} min: "
          f"{'met' if total <= TARGET_SECONDS else 'missed'}; "
          f"{total / baseline:.0f} x the bare encode")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "recipe_medium.json").write_text(json.dumps(result, indent=2))
    (out / "recipe_medium.md").write_text(table)


if __name__ == "__main__":
    main()
