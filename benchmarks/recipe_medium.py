"""The recipe at medium scale: what each phase does (the fidelity table) and what it costs.

Runs ``jobs/full_pipeline.py --config medium`` (target: 90 minutes on a 2-core CPU machine)
into ``--run-dir`` (kept, and resumed when rerun). Where not already trained, each in a run
directory of its own: with ``--ablation``, the contrastive phase again with the same steps
but without the LLM's definitions (``pairs.generated_definitions=false``); with
``--continued``, -C trained on for as many steps as a distillation trial (the paper's
argument for self-distillation is what that does to general STS). It prints and writes
(``benchmarks/results/recipe_medium.{json,md}``):

* one row per model (base, -C, -C without LLM definitions, -C continued, -S, greedy and
  uniform soups), one column per benchmark of the full suite (dev files, general STS, KG
  tasks), the biomedical mean;
* for the similarity files (111, 29, 29 and 1,500 pairs), each model's Spearman minus the
  base model's with a 95% paired bootstrap interval: which differences the files can tell
  from noise;
* each stage's seconds and the total, against a bare ``model.encode`` of 4,096 MONDO names
  measured in the same invocation (``total / baseline`` separates a slower code path from a
  slower or busier machine).

Usage::

    .venv/bin/python benchmarks/recipe_medium.py [--ablation] [--continued] [--run-dir DIR]
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from pipeline_wall_time import bare_encode_seconds

from biolord_ray.config import load_config
from biolord_ray.stages import CONTRASTIVE_MODEL_LABEL

REPO = Path(__file__).resolve().parents[1]
TARGET_SECONDS = 90 * 60
# Table rows in the recipe's order (results.json stores models with sorted keys).
ROW_ORDER = ["base", "BioLORD-C (", "BioLORD-C without", "BioLORD-C continued", "BioLORD-S",
             "BioLORD (soup, greedy", "BioLORD (soup, uniform"]
ABLATION_LABEL = "BioLORD-C without LLM definitions (ablation)"
# Stages a continued -C run takes from the medium run unchanged (its own: train_contrastive).
UPSTREAM = ["ingest_kg", "eval_sets", "generate_definitions", "build_pairs"]


def run_job(job: str, run_dir: Path, overrides: list[str]) -> float:
    command = [sys.executable, str(REPO / "jobs" / job), "--config", "medium", "--run-dir",
               str(run_dir), *[arg for o in overrides for arg in ("--set", o)]]
    started = time.perf_counter()
    subprocess.run(command, check=True, cwd=REPO)
    return time.perf_counter() - started


def read_results(path: Path) -> dict:
    return json.loads(path.read_text())


def fork_run(source: Path, target: Path, stages: list[str]) -> None:
    """A run directory that starts with ``source``'s completed ``stages`` (copied with their
    manifest records), so a job run there reruns none of them."""
    manifest = read_results(source / "manifest.json")
    target.mkdir(parents=True, exist_ok=True)
    for stage in stages:
        shutil.copytree(source / stage, target / stage, dirs_exist_ok=True)
    (target / "manifest.json").write_text(json.dumps(
        {"stages": {stage: manifest["stages"][stage] for stage in stages}}, indent=2))


def continued_label(steps: int) -> str:
    return f"BioLORD-C continued (+{steps} contrastive steps)"


def trained_results(run_dir: Path) -> Path:
    return run_dir / "train_contrastive" / "evaluation" / "results.json"


def has_trained_model(run_dir: Path) -> bool:
    return trained_results(run_dir).is_file()


def trained_model(run_dir: Path) -> dict:
    """The train_contrastive stage's evaluation of its trained model."""
    return read_results(trained_results(run_dir))["models"][CONTRASTIVE_MODEL_LABEL]


def all_models(run_dir: Path, extra: dict[str, Path]) -> tuple[list[str], dict[str, dict]]:
    """(benchmark names, label -> evaluation) of the medium run's report plus ``extra``
    (label -> a run directory whose train_contrastive model joins the table)."""
    report = read_results(run_dir / "report" / "results.json")
    models = dict(report["models"])
    models.update({label: trained_model(path) for label, path in extra.items()})
    return report["benchmarks"], models


def in_recipe_order(labels) -> list[str]:
    return sorted(labels, key=lambda label: next(
        (i for i, prefix in enumerate(ROW_ORDER) if label.startswith(prefix)), len(ROW_ORDER)))


def fidelity_table(names: list[str], models: dict[str, dict]) -> tuple[list[str], list[list]]:
    """(benchmark columns, rows of [model, score per benchmark..., biomedical mean])."""
    first = {n: next(m["benchmarks"][n] for m in models.values() if n in m["benchmarks"])
             for n in names}
    general = [n for n in names if first[n].get("domain") == "general"]
    biomedical = [n for n in names if n not in general]
    columns = biomedical + ["biomedical mean"] + [f"general STS: {n}" for n in general]
    rows = []
    for label in in_recipe_order(models):
        model = models[label]
        scores = {n: model["benchmarks"][n][first[n]["main_metric"]]
                  for n in names if n in model["benchmarks"]}
        mean = sum(scores[n] for n in biomedical) / len(biomedical)
        rows.append([label, *(scores.get(n) for n in biomedical), mean,
                     *(scores.get(n) for n in general)])
    return columns, rows


def paired_bootstrap(models: dict[str, dict], resamples: int = 2000,
                     seed: int = 0) -> tuple[list[str], list[list]]:
    """Each model's Spearman minus the base model's on every similarity file of the medium
    config, with a 95% percentile interval from resampling the pairs (the same resample for
    both models: their errors on a pair are correlated, so the paired interval is the one
    that says whether a difference is noise). Models whose directory is not on disk (the
    uniform soup, not exported) are left out."""
    from scipy.stats import rankdata

    from biolord_ray.config import load_config
    from biolord_ray.evaluation import build_suite, metrics
    from biolord_ray.models.encode import load_sentence_model

    cfg = load_config("medium")
    tasks = [t for t in build_suite(cfg.eval, ["dev", "files"]).tasks if t.kind == "similarity"]
    paths = {label: models[label]["path"] for label in in_recipe_order(models)
             if Path(models[label]["path"]).is_dir()}
    base = next(label for label in paths if label.startswith("base"))
    cosines = {}  # (label, task) -> cosine of each pair
    for label, path in paths.items():
        model = load_sentence_model(path, device="cpu")
        for task in tasks:
            left, right = (model.encode(texts, batch_size=64, normalize_embeddings=True)
                           for texts in (task.pairs.texts1, task.pairs.texts2))
            cosines[label, task.name] = metrics.cosine_pairs(left, right)

    def spearman_rows(values: np.ndarray, gold: np.ndarray) -> np.ndarray:
        """Spearman of each row (a resample) of ``values`` against the same row of ``gold``."""
        a, b = rankdata(values, axis=1), rankdata(gold, axis=1)
        a, b = a - a.mean(1, keepdims=True), b - b.mean(1, keepdims=True)
        return (a * b).sum(1) / np.sqrt((a * a).sum(1) * (b * b).sum(1))

    rng = np.random.default_rng(seed)
    rows = []
    for task in tasks:
        gold = np.asarray(task.pairs.scores, dtype=float)
        draws = rng.integers(0, len(gold), size=(resamples, len(gold)))
        base_full = spearman_rows(cosines[base, task.name][None], gold[None])[0]
        base_draws = spearman_rows(cosines[base, task.name][draws], gold[draws])
        for label in paths:
            if label == base:
                continue
            full = spearman_rows(cosines[label, task.name][None], gold[None])[0] - base_full
            deltas = spearman_rows(cosines[label, task.name][draws], gold[draws]) - base_draws
            low, high = np.percentile(deltas, [2.5, 97.5])
            rows.append([task.name, len(gold), label, float(full), float(low), float(high)])
    return ["benchmark", "pairs", "model", "Spearman - base", "95% low", "95% high"], rows


def markdown_table(columns: list[str], rows: list[list]) -> list[str]:
    def cell(value) -> str:
        return f"{value:.4f}" if isinstance(value, float) else "" if value is None else str(value)

    return ["| " + " | ".join(columns) + " |", "|---|" + "---:|" * (len(columns) - 1),
            *("| " + " | ".join(cell(v) for v in row) + " |" for row in rows)]


def markdown(columns: list[str], rows: list[list], bootstrap: tuple[list[str], list[list]],
             stages: dict, total: float, measured: bool) -> str:
    lines = markdown_table(["model", *columns], rows)
    lines += ["", *markdown_table(*bootstrap)]
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
    parser.add_argument("--continued", action="store_true",
                        help="also train -C on for as many steps as a distillation trial")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="config override passed to the jobs")
    parser.add_argument("--out", default=str(REPO / "benchmarks" / "results"))
    parser.add_argument("--no-run", action="store_true",
                        help="read the medium run instead of running it (total: the stages' "
                             "seconds); --ablation and --continued still train when missing")
    args = parser.parse_args()

    baseline = bare_encode_seconds()
    print(json.dumps({"bare_encode_seconds": round(baseline, 2)}), flush=True)
    run_dir = Path(args.run_dir).resolve()
    extra = {}  # label -> run directory of a further contrastive run
    if args.ablation:
        extra[ABLATION_LABEL] = run_dir.with_name(run_dir.name + "-without-llm-definitions")
    steps = load_config("medium", args.set).distill.max_steps
    if args.continued:
        extra[continued_label(steps)] = run_dir.with_name(run_dir.name + "-continued-c")
    total = None
    if not args.no_run:
        total = run_job("full_pipeline.py", run_dir, args.set)
    if args.ablation and not has_trained_model(extra[ABLATION_LABEL]):
        run_job("train_contrastive.py", extra[ABLATION_LABEL],
                [*args.set, "pairs.generated_definitions=false"])
    if args.continued and not has_trained_model(extra[continued_label(steps)]):
        # Same data, the -C model as the starting point, the contrastive phase's settings.
        continued = extra[continued_label(steps)]
        fork_run(run_dir, continued, UPSTREAM)
        run_job("train_contrastive.py", continued, [
            *args.set, f"contrastive.base_model={run_dir / 'train_contrastive' / 'model'}",
            f"contrastive.max_steps={steps}", f"contrastive.checkpoint_every={steps}"])

    manifest = read_results(run_dir / "manifest.json")
    records = sorted(manifest["stages"].items(), key=lambda item: item[1]["started_at"])
    stages = {name: record["seconds"] for name, record in records}
    total = total or sum(stages.values())
    names, models = all_models(run_dir, extra)
    columns, rows = fidelity_table(names, models)
    bootstrap = paired_bootstrap(models)
    result = {"run_dir": str(run_dir), "overrides": args.set, "stages_seconds": stages,
              "total_seconds": round(total, 1), "target_seconds": TARGET_SECONDS,
              "total_over_target": round(total / TARGET_SECONDS, 3),
              "bare_encode_seconds": round(baseline, 2),
              "total_over_bare_encode": round(total / baseline, 1),
              "columns": columns, "rows": rows,
              "paired_bootstrap": {"columns": bootstrap[0], "rows": bootstrap[1]}}
    table = markdown(columns, rows, bootstrap, stages, total, measured=not args.no_run)
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
