"""Fixed cost and per-concept slope of the data stages, from runs at two input sizes.

Each stage runs on a small and a larger input, twice each, in one local Ray instance started
as the jobs start it (``init_ray``): the faster of the two runs is the stage's time, the
first is shown too (it pays for worker processes that the rest of a pipeline reuses). A line
through the two sizes gives the intercept (the fixed cost: seconds a stage costs on no data;
target: under 10 s) and the slope (milliseconds per concept).

* ``ingest_kg`` of UMLS: the test fixture (tests/fixtures/umls) and a synthetic release
  (``synthetic_umls.py``);
* ``ingest_kg`` of SNOMED CT: the test fixture and a synthetic RF2 snapshot
  (``synthetic_snomed.py``);
* ``eval_sets`` and ``build_pairs`` on the bundled MONDO's first N concepts.

The bare baseline, measured in the same instance: a Ray Data round trip (``from_items`` ->
``map_batches`` -> ``materialize``) of one row: each intercept is also printed as a multiple
of it.

    .venv/bin/python benchmarks/stage_fixed_cost.py [--large 20000] [--out DIR]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def timed(step, *args, **kwargs) -> float:
    started = time.perf_counter()
    step(*args, **kwargs)
    return time.perf_counter() - started


def bare_round_trip() -> float:
    import ray.data

    return min(timed(lambda: ray.data.from_items([{"x": 1}]).map_batches(
        lambda b: b).materialize()) for _ in range(3))


def cases(work: Path, large: int) -> list[dict]:
    """(stage, kg overrides at each size, function of (cfg, run_dir) to time)."""
    from synthetic_snomed import write_release as snomed_release
    from synthetic_umls import release as umls_release

    from biolord_ray.evaluation import eval_sets
    from biolord_ray.kg import ingest
    from biolord_ray.training import pairs

    umls_meta, _ = umls_release(work / "umls", large, 0)
    snomed = snomed_release(work / f"snomed_{large}", large)
    mondo = lambda n: ["kg.format=mondo", f"kg.max_concepts={n}"]  # noqa: E731
    whole = "kg.max_concepts=null"
    return [
        {"stage": "ingest_kg (UMLS)", "prepare": [], "time": ingest.run,
         "sizes": [["kg.format=umls", f"kg.path={REPO}/tests/fixtures/umls/META", whole],
                   ["kg.format=umls", f"kg.path={umls_meta}", whole]]},
        {"stage": "ingest_kg (SNOMED CT)", "prepare": [], "time": ingest.run,
         "sizes": [["kg.format=snomed",
                    f"kg.path={REPO}/tests/fixtures/snomed/SnomedCT_TestRF2_20250101", whole],
                   ["kg.format=snomed", f"kg.path={snomed}", whole]]},
        {"stage": "eval_sets", "prepare": [ingest.run], "time": eval_sets.run,
         "sizes": [mondo(large // 10), mondo(large)]},
        {"stage": "build_pairs", "prepare": [ingest.run, eval_sets.run], "time": pairs.run,
         "sizes": [mondo(large // 10), mondo(large)]},
    ]


def measure(case: dict, work: Path) -> dict:
    from biolord_ray.config import load_config
    from biolord_ray.kg import ingest
    from biolord_ray.run_dir import RunDir

    points = []
    for i, overrides in enumerate(case["sizes"]):
        run_root = tempfile.mkdtemp(prefix="fixed-cost-", dir=work)
        cfg = load_config(None, [*overrides, f"run_dir={run_root}",
                                 "pairs.generated_definitions=false"])
        run_dir = RunDir(cfg.run_dir)
        for step in case["prepare"]:
            step(cfg, run_dir)
        runs = [timed(case["time"], cfg, run_dir, force=True) for _ in range(2)]
        concepts = run_dir.completed(ingest.STAGE)["counts"]["concepts"]
        points.append({"concepts": concepts, "first_seconds": round(runs[0], 2),
                       "seconds": round(min(runs), 2)})
        print(json.dumps({case["stage"]: points[-1], "size": i}), flush=True)
    (small, large) = points
    slope = (large["seconds"] - small["seconds"]) / max(large["concepts"] - small["concepts"], 1)
    return {"stage": case["stage"], "points": points,
            "intercept_seconds": round(small["seconds"] - slope * small["concepts"], 2),
            "ms_per_concept": round(1000 * slope, 4)}


def markdown(results: list[dict], bare: float) -> str:
    lines = ["| stage | small: concepts, s (first run) | large: concepts, s (first run) | "
             "fixed cost (s) | ms/concept | fixed cost / bare Ray Data round trip |",
             "|---|---:|---:|---:|---:|---:|"]
    for r in results:
        cells = [f"{p['concepts']:,}, {p['seconds']:.1f} ({p['first_seconds']:.1f})"
                 for p in r["points"]]
        lines.append(f"| {r['stage']} | {' | '.join(cells)} | {r['intercept_seconds']:.1f} | "
                     f"{r['ms_per_concept']:.3f} | {r['intercept_seconds'] / bare:.0f}x |")
    lines.append(f"\nbare Ray Data round trip (one row): {bare:.2f} s")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--large", type=int, default=20000, help="concepts of the large input")
    parser.add_argument("--out", default=str(REPO / "benchmarks" / "results"))
    args = parser.parse_args()

    from biolord_ray.config import RayConfig
    from biolord_ray.runtime import init_ray

    init_ray(RayConfig())
    with tempfile.TemporaryDirectory(prefix="stage-fixed-cost-") as tmp:
        work = Path(tmp)
        results = [measure(case, work) for case in cases(work, args.large)]
    bare = bare_round_trip()
    table = markdown(results, bare)
    print(table)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "stage_fixed_cost.json").write_text(json.dumps(
        {"bare_round_trip_seconds": bare, "stages": results}, indent=2))
    (out / "stage_fixed_cost.md").write_text(table)


if __name__ == "__main__":
    main()
