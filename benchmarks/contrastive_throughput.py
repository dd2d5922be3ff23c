"""Contrastive training: pairs/s of Ray Train + DeepSpeed against a bare training loop.

All three runs train the same base model on the same pairs (the first rows of a run
directory's ``build_pairs`` output), with the same per-process batch size, sequence length,
optimiser (AdamW) and symmetric in-batch-negatives loss, for the same number of steps, in
this one process invocation:

* **bare**: one process, no Ray, no DeepSpeed: sentence-transformers'
  ``MultipleNegativesRankingLoss`` (symmetric), ``torch.optim.AdamW``, batches cut from the
  Parquet table and tokenised with ``model.preprocess``; torch limited to the threads one
  Ray Train worker gets (``--threads``), so both sides have the same compute;
* **1 worker**: the ``train_contrastive`` loop (``biolord_ray.training.loop.fit``) with one
  Ray Train worker: Ray Data streaming, DeepSpeed engine (ZeRO stage and precision from the
  config), same-concept masking;
* **2 workers**: the same with two workers, each with the same per-worker batch (negatives
  gathered across them).

Timing is steady state: each side runs 2 x ``--steps`` steps and times the second half (the
first batches through Ray Data and lazy allocations fall in the untimed half; the Ray runs
checkpoint at the half, which restarts their throughput window). Model loading and
DeepSpeed set-up are outside it. The Ray runs' wall time with set-up is reported beside it.
Printed:
``ray_1_worker / bare`` (target >= 0.9) and ``2 workers / 1 worker`` (scaling; 2.0 is
ideal, on a 2-core machine the workers also share the cores with Ray Data and the driver).
On a GPU machine (``--gpu``) the report adds tokens/s and the share of the GPU's bf16 peak
reached (``--peak-tflops``, default H100 SXM dense bf16).

Usage::

    .venv/bin/python benchmarks/contrastive_throughput.py [--steps 40] [--run-dir runs/tiny]
    .venv/bin/python benchmarks/contrastive_throughput.py --gpu --set contrastive.precision=bf16
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run-dir", default="runs/tiny")
    parser.add_argument("--steps", type=int, default=20,
                        help="timed steps, after as many untimed ones")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads of the bare loop (a CPU Ray Train worker gets "
                             "OMP_NUM_THREADS = its CPUs, 1 on the embedded default)")
    parser.add_argument("--gpu", action="store_true")
    parser.add_argument("--peak-tflops", type=float, default=989.0)
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--out", default=str(REPO / "benchmarks" / "results"))
    args = parser.parse_args()

    from biolord_ray.config import load_config
    from biolord_ray.training.loop import resolve_precision

    cfg = load_config(None, [f"run_dir={args.run_dir}", *args.set])
    tcfg = cfg.contrastive
    tcfg.use_gpu = args.gpu
    pairs_path = prepare_pairs(cfg, 2 * args.steps * tcfg.batch_size * 2)

    bare = run_bare(pairs_path, cfg, args.steps, args.threads, args.gpu)
    print(json.dumps({"bare": bare}), flush=True)
    ray_runs = {n: run_ray(pairs_path, cfg, args.steps, n) for n in (1, 2)}
    report = {
        "model": tcfg.base_model, "batch_size_per_worker": tcfg.batch_size,
        "max_seq_length": tcfg.max_seq_length, "timed_steps": args.steps,
        "zero_stage": tcfg.zero_stage, "precision": resolve_precision(tcfg),
        "device": "gpu" if args.gpu else f"cpu ({os.cpu_count()} cores)",
        "bare": bare, "ray_1_worker": ray_runs[1], "ray_2_workers": ray_runs[2],
        "ratio_1_worker_over_bare": ray_runs[1]["pairs_per_second"] / bare["pairs_per_second"],
        "scaling_2_over_1": ray_runs[2]["pairs_per_second"] / ray_runs[1]["pairs_per_second"],
    }
    if args.gpu:
        report["gpu"] = gpu_utilisation(bare, ray_runs[1], cfg, args.peak_tflops)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "contrastive_throughput.json").write_text(json.dumps(report, indent=2))
    print(json.dumps(report, indent=2))
    print(f"1 Ray Train worker + DeepSpeed / bare loop: "
          f"{report['ratio_1_worker_over_bare']:.2f} (target >= 0.9); "
          f"2 workers / 1 worker: {report['scaling_2_over_1']:.2f}")


def prepare_pairs(cfg, n_rows: int) -> str:
    """The first ``n_rows`` training pairs of the run directory (stages run if missing)."""
    import pyarrow.parquet as pq

    from biolord_ray import stages
    from biolord_ray.run_dir import RunDir
    from biolord_ray.runtime import init_ray

    run_dir = RunDir(cfg.run_dir)
    if not run_dir.stage_record(stages.BUILD_PAIRS):
        init_ray(cfg.ray)
        # Without LLM definitions (generate_definitions not run): the pairs are only timed.
        for stage in (stages.INGEST_KG, stages.EVAL_SETS, stages.BUILD_PAIRS):
            stages.run(stage, cfg, run_dir)
    table = pq.read_table(run_dir.output(stages.BUILD_PAIRS, "train"), filesystem=run_dir.fs)
    if table.num_rows < n_rows:
        raise SystemExit(f"{table.num_rows} training pairs; the benchmark needs {n_rows} "
                         "(lower --steps)")
    path = os.path.join(tempfile.mkdtemp(prefix="biolord-bench-"), "pairs.parquet")
    pq.write_table(table.slice(0, n_rows), path)
    return path


def run_bare(pairs_path: str, cfg, steps: int, threads: int, gpu: bool) -> dict:
    import pyarrow.parquet as pq
    import torch
    from sentence_transformers.sentence_transformer.losses import MultipleNegativesRankingLoss

    from biolord_ray.models.encode import load_sentence_model, sentence_model_dir

    tcfg = cfg.contrastive
    torch.set_num_threads(threads)
    torch.manual_seed(tcfg.seed)
    device = "cuda" if gpu else "cpu"
    model = load_sentence_model(sentence_model_dir(tcfg.base_model), device=device)
    model.max_seq_length = tcfg.max_seq_length
    loss_fn = MultipleNegativesRankingLoss(model, scale=tcfg.scale,
                                           directions=("query_to_doc", "doc_to_query"),
                                           partition_mode="per_direction")
    optimizer = torch.optim.AdamW(model.parameters(), lr=tcfg.lr, weight_decay=tcfg.weight_decay)
    from biolord_ray.training.loop import resolve_precision

    # The precision the Ray runs train in (pure bf16 weights approximated by autocast).
    autocast = torch.autocast(device, dtype=torch.bfloat16,
                              enabled=resolve_precision(tcfg) in ("bf16", "bf16-mixed"))
    rows = pq.read_table(pairs_path).to_pydict()
    model.train()
    tokens = 0
    for step in range(2 * steps):
        if step == steps:
            if gpu:
                torch.cuda.synchronize()
            started, tokens = time.perf_counter(), 0
        batch = slice(step * tcfg.batch_size, (step + 1) * tcfg.batch_size)
        features = [model.preprocess(rows["anchor"][batch]),
                    model.preprocess(rows["positive"][batch])]
        features = [{k: v.to(device) if hasattr(v, "to") else v for k, v in f.items()}
                    for f in features]
        tokens += sum(int(f["attention_mask"].sum()) for f in features)
        with autocast:
            loss = loss_fn(features, None)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), tcfg.grad_clip)
        optimizer.step()
        optimizer.zero_grad()
    if gpu:
        torch.cuda.synchronize()
    seconds = time.perf_counter() - started
    pairs = steps * tcfg.batch_size
    return {"seconds": seconds, "pairs": pairs, "pairs_per_second": pairs / seconds,
            "tokens_per_second": tokens / seconds, "final_loss": float(loss)}


def run_ray(pairs_path: str, cfg, steps: int, workers: int) -> dict:
    import copy

    import pyarrow.fs as pafs
    import ray.data

    from biolord_ray.runtime import init_ray
    from biolord_ray.training import loop, phases

    init_ray(cfg.ray)
    tcfg = copy.deepcopy(cfg.contrastive)
    tcfg.num_workers, tcfg.max_steps, tcfg.epochs = workers, 2 * steps, 1
    # The checkpoint at the half restarts the loop's throughput window: the last report's
    # pairs_per_second covers the second half only.
    tcfg.checkpoint_every, tcfg.validation_suites, tcfg.log_every = steps, [], 10**9
    datasets = {"train": ray.data.read_parquet(pairs_path).select_columns(
        ["concept_id", "anchor", "positive"])}
    storage = tempfile.mkdtemp(prefix="biolord-bench-ray-")
    started = time.perf_counter()
    result = loop.fit(phases.CONTRASTIVE, tcfg, cfg.models, datasets, None, storage,
                      pafs.LocalFileSystem(), f"bench-{workers}")
    metrics = result.metrics
    return {"workers": workers, "wall_seconds_with_setup": time.perf_counter() - started,
            "pairs": steps * tcfg.batch_size * workers,
            "pairs_per_second": metrics["pairs_per_second"],
            "final_loss": metrics["train_loss"]}


def gpu_utilisation(bare: dict, one_worker: dict, cfg, peak_tflops: float) -> dict:
    """Approximate model FLOPs: 6 x parameters x tokens per training step."""
    from biolord_ray.models.encode import load_sentence_model, sentence_model_dir

    model = load_sentence_model(sentence_model_dir(cfg.contrastive.base_model), device="cpu")
    params = sum(p.numel() for p in model.parameters())
    tokens_per_pair = bare["tokens_per_second"] / bare["pairs_per_second"]
    ray_tokens = one_worker["pairs_per_second"] * tokens_per_pair
    return {"parameters": params, "tokens_per_second_bare": bare["tokens_per_second"],
            "tokens_per_second_ray_1_worker": ray_tokens,
            "bf16_peak_fraction_ray_1_worker": 6 * params * ray_tokens / (peak_tflops * 1e12)}


if __name__ == "__main__":
    main()
