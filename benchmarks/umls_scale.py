"""The data stages at UMLS scale: cost per concept and peak memory at three sizes.

For each size, a synthetic UMLS release (``synthetic_umls.py``: all four RRF files in UMLS's
proportions, cached under ``--data-dir``) goes through the stages that touch every concept:
``ingest_kg``, ``eval_sets``, prompt building (the ``generate_definitions`` stage's prompts for
every concept, without the LLM) and ``build_pairs`` (without generated definitions), in a
fresh child process with its own local Ray (``ray.num_cpus`` as configured: the embedded
default's whole machine). Each stage prints

* seconds, and milliseconds per concept;
* peak memory: the peak summed PSS of the driver and every Ray process (raylet, GCS,
  workers; shared pages counted once), sampled every second while the stage runs
  (``ingest_throughput.MemorySampler``);

and, measured in the same child before Ray starts, the bare floor: a streaming
``pyarrow.csv`` read of the four files (ms per concept). The summary gives, per stage, the
spread of per-concept cost and of peak memory across the sizes (largest / smallest): linear
and bounded means both near 1 (targets in the README: within 20%).

Usage::

    .venv/bin/python benchmarks/umls_scale.py [--sizes 100000,300000,1000000] [--out DIR]
        [--set ray.max_idle_workers=2 ...]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
STAGES = ["ingest_kg", "eval_sets", "prompts", "build_pairs"]


def bare_read_seconds(meta: Path) -> float:
    """A streaming pyarrow.csv pass over the four RRF files (batches dropped): the floor."""
    import pyarrow as pa
    import pyarrow.csv as pacsv

    from biolord_ray.kg import umls

    started = time.perf_counter()
    for name, columns in {**umls.REQUIRED, **umls.OPTIONAL}.items():
        names = columns + ["_end"]
        reader = pacsv.open_csv(
            meta / name, read_options=pacsv.ReadOptions(column_names=names),
            parse_options=pacsv.ParseOptions(delimiter="|", quote_char=False),
            convert_options=pacsv.ConvertOptions(column_types={c: pa.string() for c in names}))
        for _ in reader:
            pass
    return time.perf_counter() - started


def child(meta: Path, run_root: Path, concepts: int, overrides: list[str]) -> dict:
    """The stages on one release, in this (fresh) process."""
    from ingest_throughput import MIB, MemorySampler, object_store_probe

    from biolord_ray.config import load_config
    from biolord_ray.definitions import generate
    from biolord_ray.evaluation import eval_sets
    from biolord_ray.kg import ingest
    from biolord_ray.run_dir import RunDir
    from biolord_ray.runtime import init_ray
    from biolord_ray.training import pairs

    bare = bare_read_seconds(meta)
    cfg = load_config(None, ["kg.format=umls", f"kg.path={meta}", "kg.max_concepts=null",
                             f"run_dir={run_root}", "pairs.generated_definitions=false",
                             *overrides])
    run_dir = RunDir(cfg.run_dir)
    init_ray(cfg.ray)
    sampler = MemorySampler(pss_interval=1.0, store_fn=object_store_probe())
    sampler.start()
    steps = {
        "ingest_kg": lambda: ingest.run(cfg, run_dir),
        "eval_sets": lambda: eval_sets.run(cfg, run_dir),
        "prompts": lambda: generate._write_prompts(cfg, run_dir, run_dir.path("prompts")),
        "build_pairs": lambda: pairs.run(cfg, run_dir),
    }
    result = {"concepts": concepts, "bare_read_ms_per_concept": 1000 * bare / concepts,
              "stages": {}}
    for name, step in steps.items():
        started = time.perf_counter()
        step()
        ended = time.perf_counter()
        sampler.sample(pss=True)  # a sample inside every stage, however short
        window = [s for s in sampler.pss_series
                  if started - sampler.t0 <= s["t"] <= ended - sampler.t0]
        seconds = ended - started
        peak = max(window, key=lambda s: s["pss"])
        store = [used for t, used, _ in sampler.store_series
                 if started - sampler.t0 <= t <= ended - sampler.t0]
        # Where the peak is: the driver, Ray's workers (object store pages they map
        # included), Ray's own processes; and how many workers were alive.
        result["stages"][name] = {
            "seconds": round(seconds, 1), "ms_per_concept": 1000 * seconds / concepts,
            "peak_mib": peak["pss"] / MIB,
            "at_peak_mib": {k: round(peak[f"pss_{k}"] / MIB)
                            for k in ("driver", "workers", "ray_system")},
            "workers_at_peak": peak["n_workers"],
            "idle_workers_at_peak": peak["n_idle_workers"],
            "idle_workers_mib_at_peak": round(peak["pss_idle_workers"] / MIB),
            "object_store_peak_mib": round(max(store, default=0) / MIB)}
        print(json.dumps({name: result["stages"][name]}), flush=True)
    sampler.stop()
    counts = run_dir.completed(ingest.STAGE)["counts"]
    result["ingested_concepts"] = counts["concepts"]
    result["relations"] = counts["relations"]
    return result


def run_size(data_dir: Path, concepts: int, seed: int, overrides: list[str]) -> dict:
    from synthetic_umls import release

    meta, rows = release(data_dir, concepts, seed)
    with tempfile.TemporaryDirectory(prefix="umls-scale-") as tmp:
        command = [sys.executable, __file__, "--child", str(meta), "--run-dir", tmp,
                   "--concepts", str(rows["concepts"])] + [
                       arg for item in overrides for arg in ("--set", item)]
        done = subprocess.run(command, cwd=REPO, capture_output=True, text=True)
        lines = [x for x in done.stdout.splitlines() if x.startswith("RESULT ")]
        if done.returncode or not lines:
            sys.exit(f"{concepts} concepts failed:\n{done.stderr[-4000:]}")
    return {**json.loads(lines[-1][len("RESULT "):]), "rows": rows}


def markdown(results: list[dict], overrides: list[str]) -> str:
    sizes = [r["concepts"] for r in results]
    config = ", ".join(f"`{o}`" for o in overrides) or "the defaults"
    head = f"Config: {config}.\n\n| stage | " + " | ".join(
        f"{n:,} concepts: ms/concept, peak MiB" for n in sizes)
    lines = [head + " | cost spread | memory spread |", "|---|" + "---:|" * (len(sizes) + 2)]
    for stage in STAGES:
        cost = [r["stages"][stage]["ms_per_concept"] for r in results]
        peak = [r["stages"][stage]["peak_mib"] for r in results]
        cells = [f"{c:.3f}, {p:,.0f}" for c, p in zip(cost, peak, strict=True)]
        lines.append(f"| {stage} | " + " | ".join(cells) +
                     f" | {max(cost) / min(cost):.2f} | {max(peak) / min(peak):.2f} |")
    bare = [r["bare_read_ms_per_concept"] for r in results]
    lines.append("| bare pyarrow.csv read of the 4 files | " +
                 " | ".join(f"{b:.3f}, -" for b in bare) +
                 f" | {max(bare) / min(bare):.2f} | |")
    largest = results[-1]
    lines += ["", f"At the {largest['concepts']:,}-concept peak of each stage (MiB; workers alive, "
              "of which idle, and the idle ones' share):", "",
              "| stage | driver / workers / Ray | workers (idle) | idle workers' MiB "
              "| object store peak MiB |", "|---|---|---:|---:|---:|"]
    for stage in STAGES:
        s = largest["stages"][stage]
        split = " / ".join(f"{s['at_peak_mib'][k]:,}" for k in ("driver", "workers",
                                                                   "ray_system"))
        lines.append(f"| {stage} | {split} | {s['workers_at_peak']} "
                     f"({s['idle_workers_at_peak']}) | {s['idle_workers_mib_at_peak']:,} "
                     f"| {s['object_store_peak_mib']:,} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="100000,300000,1000000",
                        help="concept counts, comma-separated")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--data-dir", default="/tmp/biolord_ray_bench")
    parser.add_argument("--out", default=str(REPO / "benchmarks" / "results"))
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="config override for the stages, e.g. ray.max_idle_workers=2")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--run-dir", help=argparse.SUPPRESS)
    parser.add_argument("--concepts", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        result = child(Path(args.child), Path(args.run_dir), args.concepts, args.set)
        print("RESULT " + json.dumps(result), flush=True)
        return

    results = []
    for size in (int(s) for s in args.sizes.split(",")):
        results.append(run_size(Path(args.data_dir), size, args.seed, args.set))
        print(json.dumps(results[-1]["stages"]), flush=True)
    table = markdown(results, args.set)
    print(table)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "umls_scale.json").write_text(json.dumps(results, indent=2))
    (out / "umls_scale.md").write_text(table)


if __name__ == "__main__":
    main()
