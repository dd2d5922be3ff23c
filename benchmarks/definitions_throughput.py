"""Definition generation: output tokens/s of the Ray Data + vLLM pipeline against bare vLLM.

Both sides generate definitions for the same prompts (the platform's prompts for the first
``--concepts`` concepts of the bundled MONDO), with the same model, engine arguments and
sampling parameters, in the same run:

* **bare**: a fresh process building ``vllm.LLM`` and calling ``LLM.chat`` once over every
  prompt (vLLM batches them itself);
* **pipeline**: the ``generate_definitions`` stage in a fresh process on a fresh local Ray:
  prompts read from Parquet, the ``ray.data.llm`` processor (chat template and engine actors;
  on GPUs tokenize and detokenize actors too), validation, Parquet shards, consolidation.

Two ratios are printed:

* end to end: output tokens/s including engine start on both sides (the work a user waits
  for at this size);
* steady state: output tokens over the time from the first request entering the engine to
  the last answer out (the stage records each answer's time out and time in the engine:
  ``steady_output_tokens_per_second`` of its summary), against the bare side's ``LLM.chat``
  time alone. Engine start-up is outside both, whatever the number of concepts.

Results go to ``--out``/definitions_throughput.json.

Usage::

    .venv/bin/python benchmarks/definitions_throughput.py [--concepts 256] [--out DIR]
    .venv/bin/python benchmarks/definitions_throughput.py --gpu --llm /models/Qwen2.5-7B-Instruct
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

BARE = textwrap.dedent("""
    import json, sys, time

    if __name__ == "__main__":
        spec = json.loads(sys.argv[1])
        import pyarrow.parquet as pq
        from vllm import LLM, SamplingParams

        prompts = pq.read_table(spec["prompts"]).to_pylist()
        chats = [[{"role": "system", "content": p["system_prompt"]},
                  {"role": "user", "content": p["user_prompt"]}] for p in prompts]
        started = time.perf_counter()
        llm = LLM(model=spec["model"], **spec["engine_kwargs"])
        ready = time.perf_counter()
        outputs = llm.chat(chats, SamplingParams(**spec["sampling"]), use_tqdm=False)
        done = time.perf_counter()
        print("RESULT " + json.dumps({
            "engine_start_s": ready - started, "generate_s": done - ready,
            "total_s": done - started, "requests": len(outputs),
            "output_tokens": sum(len(o.outputs[0].token_ids) for o in outputs)}))
""")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--concepts", type=int, default=256)
    parser.add_argument("--llm", default=None, help="model spec (default: the config's)")
    parser.add_argument("--gpu", action="store_true", help="one GPU engine (vllm build)")
    parser.add_argument("--out", default=str(REPO / "benchmarks" / "results"))
    args = parser.parse_args()

    overrides = [f"kg.max_concepts={args.concepts}", "definitions.only_missing=false"]
    if args.llm:
        overrides.append(f"definitions.llm={args.llm}")
    if args.gpu:
        overrides += ["definitions.gpus_per_engine=1",
                      "definitions.engine_kwargs={max_model_len: 1024, "
                      "gpu_memory_utilization: 0.85}"]
    with tempfile.TemporaryDirectory() as tmp:
        prompts_file, model_dir, cfg = prepare_prompts(Path(tmp), overrides)
        spec = {"prompts": str(prompts_file), "model": model_dir,
                "engine_kwargs": {"tensor_parallel_size": cfg.definitions.tensor_parallel_size,
                                  **cfg.definitions.engine_kwargs},
                "sampling": {"max_tokens": cfg.definitions.max_tokens,
                             "temperature": cfg.definitions.temperature}}
        bare = run_bare(spec)
        pipeline = run_pipeline(Path(tmp), overrides)
    result = compare(bare, pipeline, args)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "definitions_throughput.json").write_text(json.dumps(result, indent=2))
    print(f"\nconcepts: {args.concepts}   output tokens: bare {bare['output_tokens']}, "
          f"pipeline {pipeline['output_tokens']}")
    print(f"bare vLLM : engine start {bare['engine_start_s']:.1f} s, generate "
          f"{bare['generate_s']:.1f} s -> {result['bare_tokens_per_s_end_to_end']:.1f} tok/s "
          f"end to end, {result['bare_tokens_per_s_steady']:.1f} tok/s steady")
    print(f"pipeline  : {pipeline['generation_seconds']:.1f} s -> "
          f"{pipeline['output_tokens_per_second']:.1f} tok/s end to end, "
          f"{result['pipeline_tokens_per_s_steady']:.1f} tok/s steady; fixed cost "
          f"{result['pipeline_fixed_seconds']:.1f} s")
    print(f"ratio pipeline/bare: end to end {result['ratio_end_to_end']:.2f}, steady state "
          f"{result['ratio_steady_state']:.2f} (target >= 0.8 on CPU, 0.9 on GPU)")


def compare(bare: dict, pipeline: dict, args) -> dict:
    bare_end_to_end = bare["output_tokens"] / bare["total_s"]
    bare_steady = bare["output_tokens"] / bare["generate_s"]
    steady = pipeline["steady_output_tokens_per_second"]
    return {"concepts": args.concepts, "device": "gpu" if args.gpu else "cpu",
            "bare": bare, "pipeline": pipeline,
            "bare_tokens_per_s_end_to_end": bare_end_to_end,
            "bare_tokens_per_s_steady": bare_steady,
            "pipeline_tokens_per_s_end_to_end": pipeline["output_tokens_per_second"],
            "pipeline_tokens_per_s_steady": steady,
            "pipeline_fixed_seconds":
                pipeline["generation_seconds"] - pipeline["output_tokens"] / steady,
            "ratio_end_to_end": pipeline["output_tokens_per_second"] / bare_end_to_end,
            "ratio_steady_state": steady / bare_steady}


def prepare_prompts(tmp: Path, overrides: list[str]):
    """Ingest the slice and write the platform's prompts; return their file and the model."""
    import pyarrow.parquet as pq
    import ray

    from biolord_ray.config import load_config
    from biolord_ray.definitions import generate
    from biolord_ray.kg import ingest
    from biolord_ray.models import resolve_model
    from biolord_ray.run_dir import RunDir
    from biolord_ray.runtime import init_ray

    cfg = load_config(None, [*overrides, f"run_dir={tmp / 'prompts_run'}"])
    run_dir = RunDir(cfg.run_dir)
    init_ray(cfg.ray)
    ingest.run(cfg, run_dir)
    folder, _ = generate._write_prompts(cfg, run_dir, run_dir.path("prompts"))
    prompts_file = tmp / "prompts.parquet"
    pq.write_table(pq.read_table(folder), prompts_file)
    ray.shutdown()
    return prompts_file, resolve_model(cfg.definitions.llm, cfg.models.cache_dir), cfg


def run_bare(spec: dict) -> dict:
    result = subprocess.run([sys.executable, "-c", BARE, json.dumps(spec)], cwd=REPO,
                            capture_output=True, text=True, timeout=3600)
    lines = [x for x in result.stdout.splitlines() if x.startswith("RESULT ")]
    if result.returncode != 0 or not lines:
        sys.exit(f"bare vLLM failed:\n{result.stderr[-4000:]}")
    return json.loads(lines[-1][len("RESULT "):])


def run_pipeline(tmp: Path, overrides: list[str]) -> dict:
    """The stage in a fresh process (fresh Ray), on a copy of the ingested slice."""
    run = tmp / "pipeline"
    shutil.copytree(tmp / "prompts_run", run, ignore=shutil.ignore_patterns("prompts"))
    args = [sys.executable, str(REPO / "jobs" / "generate_definitions.py"), "--run-dir",
            str(run)] + [a for o in overrides for a in ("--set", o)]
    started = time.perf_counter()
    result = subprocess.run(args, cwd=REPO, capture_output=True, text=True, timeout=3600)
    if result.returncode != 0:
        sys.exit(f"pipeline failed:\n{result.stderr[-4000:]}")
    summary = json.loads((run / "generate_definitions" / "summary.json").read_text())
    summary["job_wall_s"] = time.perf_counter() - started
    return summary


if __name__ == "__main__":
    main()
