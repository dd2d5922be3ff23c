"""The training step and the encoder on one GPU, without Ray: rates, FLOPs utilisation, and
ratios to a bare sentence-transformers loop measured in the same run.

Measured in one process, each platform figure beside its bare baseline:

* **matmul**: the device's bf16 matrix rate (a large bf16 matmul, timed here), the
  denominator of the model FLOPs utilisation (MFU);
* **contrastive** and **distill** step: the platform's training step, built by
  ``loop.build_step`` exactly as a Ray Train worker builds it (the phase's loss from
  ``training.phases`` inside the DeepSpeed engine that ``loop.deepspeed_config`` configures,
  ZeRO and precision from the preset), driven on one process; against a bare
  sentence-transformers loop on the same model, batches, sequence length and loss
  (``MultipleNegativesRankingLoss``, symmetric: the platform's loss without its same-concept
  mask / ``MSELoss``), ``torch.optim.AdamW``, gradient clipping, bf16 autocast. Both sides
  train on the same collated batches (tokenised before timing: on a worker Ray Data's
  prefetch thread tokenises while the GPU trains). Ratio goal: platform / bare >= 0.9;
* **encoder**: texts/s of the platform's encoder (``models.encode.EncoderActor``, used by
  teacher targets and evaluation, in calls of ``ENCODER_CALL_TEXTS`` texts) against one bare
  ``model.encode`` over the same texts, batch 256, bf16 autocast on both.

Steps/s, pairs/s (rows/s), tokens/s (non-padding tokens) and MFU (6 x non-embedding
parameters x tokens per training step, 2 x for encoding, over the measured bf16 rate; padding
and the attention's quadratic term are left out, so MFU is a floor) go to a JSON file and a
printed table.

Settings: the ``paper`` preset's per-worker ones (all-mpnet-base-v2, batch 256, max sequence
length 128, bf16, ZeRO-2) on one process. ``--smoke``: the embedded default's model and
precision at batch 8 for a few steps, on whatever device there is (CPU in the tests).

Weights: ``--random-weights`` builds the model's architecture from its ``config.json`` with
random weights; step and encoder timings do not depend on the weight values, and the GPU
machine gets only the model's config and tokenizer files (its weights are over the carry
limit). Texts: (name, definition) pairs of the bundled MONDO, or ``--pairs`` (JSON lines).

Usage::

    # here: the model's config and tokenizer, the pairs and the wheels the GPU machine needs
    .venv/bin/python benchmarks/gpu_step.py prepare .device --wheels
    # on the GPU machine (device tool, carry [".device"], .device in .git/info/exclude):
    pip install --no-deps .device/wheels/*.whl && PYTHONPATH=. python benchmarks/gpu_step.py \\
        run --model .device/model --random-weights --pairs .device/pairs.jsonl \\
        --out "$OUT"
    # the CPU smoke run (tests/benchmarks/test_gpu_step.py)
    .venv/bin/python benchmarks/gpu_step.py run --smoke --out /tmp/gpu-step
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # run as a script from anywhere (the GPU machine has no install)

WEIGHT_FILES = (".safetensors", ".bin", ".pt", ".h5", ".msgpack", ".ot")
SKIPPED_DIRS = ("onnx", "openvino")
# DeepSpeed and the pure-Python packages it imports that the GPU machine's image lacks.
DEVICE_WHEELS = ["deepspeed==0.19.8", "hjson", "py-cpuinfo", "msgpack", "ninja", "einops"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog=__doc__.split("\n\n", 1)[1])
    commands = parser.add_subparsers(dest="command", required=True)
    prepare = commands.add_parser("prepare", help="write what the GPU machine needs")
    prepare.add_argument("folder")
    prepare.add_argument("--model", default="packaged:all-mpnet-base-v2")
    prepare.add_argument("--pairs", type=int, default=256 * 40)
    prepare.add_argument("--wheels", action="store_true",
                         help=f"also build/download wheels of {', '.join(DEVICE_WHEELS)}")
    run = commands.add_parser("run", help="measure")
    run.add_argument("--smoke", action="store_true",
                     help="the embedded default's model, batch 8, a few steps")
    run.add_argument("--model", default=None, help="model spec or folder (default: the "
                     "preset's base model)")
    run.add_argument("--random-weights", action="store_true")
    run.add_argument("--pairs", default=None, help="JSON lines with concept_id, anchor, positive")
    run.add_argument("--steps", type=int, default=None, help="timed steps (30; smoke 2)")
    run.add_argument("--warmup", type=int, default=None, help="untimed steps first (5; smoke 1)")
    run.add_argument("--out", default=str(REPO / "benchmarks" / "results"))
    args = parser.parse_args()
    if args.command == "prepare":
        prepare_device_folder(Path(args.folder), args.model, args.pairs, args.wheels)
    else:
        report = measure(args)
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        (out / "gpu_step.json").write_text(json.dumps(report, indent=2))
        print(table(report))


# --- set-up --------------------------------------------------------------------------------

def prepare_device_folder(folder: Path, model: str, n_pairs: int, wheels: bool) -> None:
    from biolord_ray.models.encode import sentence_model_dir

    folder.mkdir(parents=True, exist_ok=True)
    copy_without_weights(Path(sentence_model_dir(model)), folder / "model")
    with open(folder / "pairs.jsonl", "w") as f:
        for row in mondo_pairs(n_pairs):
            f.write(json.dumps(row) + "\n")
    if wheels:
        subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-w",
                        str(folder / "wheels"), *DEVICE_WHEELS], check=True)
    size = sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())
    print(f"{folder}: model/ ({model}'s config and tokenizer), pairs.jsonl ({n_pairs} pairs)"
          f"{', wheels' if wheels else ''}; {size / 2**20:.1f} MiB")


def copy_without_weights(source: Path, target: Path) -> None:
    """A sentence-transformers folder without its weight files (config, tokenizer, modules)."""
    shutil.copytree(source, target, dirs_exist_ok=True, ignore=lambda directory, names: [
        n for n in names if n.endswith(WEIGHT_FILES) or n in SKIPPED_DIRS])


def with_random_weights(model_dir: str) -> str:
    """A copy of ``model_dir`` whose transformer has random weights built from its config."""
    import torch
    from transformers import AutoConfig, AutoModel

    torch.manual_seed(0)
    target = Path(tempfile.mkdtemp(prefix="biolord-random-model-"))
    copy_without_weights(Path(model_dir), target)
    AutoModel.from_config(AutoConfig.from_pretrained(model_dir)).save_pretrained(target)
    return str(target)


def mondo_pairs(n: int) -> list[dict]:
    """(name, definition) pairs of the bundled MONDO's defined terms, repeated up to ``n``."""
    from biolord_ray.kg.mondo import load_bundled

    terms, _ = load_bundled("MONDO")
    pairs = [{"concept_id": cid, "anchor": t["label"], "positive": t["description"]}
             for cid, t in sorted(terms.items())
             if t.get("description") and not t.get("deprecated")]
    return [pairs[i % len(pairs)] for i in range(n)]


def settings(smoke: bool, model: str | None, random_weights: bool):
    """(contrastive, distill) TrainConfigs for one process, and the models config."""
    from biolord_ray.config import load_config
    from biolord_ray.models.encode import sentence_model_dir

    cfg = load_config(None if smoke else "paper", [])
    spec = model or cfg.contrastive.base_model
    model_dir = sentence_model_dir(spec, cfg.models.cache_dir, cfg.models.trust_remote_code)
    if random_weights:
        model_dir = with_random_weights(model_dir)
    import torch

    per_process = {"base_model": model_dir, "num_workers": 1,
                   "use_gpu": torch.cuda.is_available()}
    if smoke:
        per_process.update(batch_size=8, max_seq_length=32)
    return (dataclasses.replace(cfg.contrastive, **per_process),
            dataclasses.replace(cfg.distill, **per_process), cfg.models)


# --- measurement ---------------------------------------------------------------------------

def measure(args) -> dict:
    import torch

    from biolord_ray.training.loop import resolve_precision, single_process_group

    steps = args.steps or (2 if args.smoke else 30)
    warmup = args.warmup if args.warmup is not None else (1 if args.smoke else 5)
    contrastive, distill, models = settings(args.smoke, args.model, args.random_weights)
    gpu = contrastive.use_gpu
    device = "cuda" if gpu else "cpu"
    n_rows = contrastive.batch_size * (warmup + steps)
    pairs = load_pairs(args.pairs, n_rows) if args.pairs else mondo_pairs(n_rows)
    single_process_group(gpu)

    report = {
        "device": torch.cuda.get_device_name() if gpu else f"cpu ({os.cpu_count()} cores)",
        "model": contrastive.base_model if not args.random_weights
        else f"{args.model or 'preset base model'} (random weights)",
        "batch_size": contrastive.batch_size, "max_seq_length": contrastive.max_seq_length,
        "zero_stage": contrastive.zero_stage, "precision": resolve_precision(contrastive),
        "warmup_steps": warmup, "timed_steps": steps,
        "matmul": matmul_rate(device, 512 if args.smoke else 8192),
    }
    peak = report["matmul"]["tflops"] * 1e12
    for name, tcfg in (("contrastive", contrastive), ("distill", distill)):
        report[name] = compare_steps(name, tcfg, models, pairs, warmup, steps, device, peak)
    report["encoder"] = compare_encoders(contrastive, pairs, device, peak,
                                         n_texts=64 if args.smoke else 16384)
    return report


def load_pairs(path: str, n: int) -> list[dict]:
    with open(path) as f:
        rows = [json.loads(line) for line in f if line.strip()]
    return [rows[i % len(rows)] for i in range(n)]


def matmul_rate(device: str, n: int, repeats: int = 20) -> dict:
    """The device's measured bf16 matrix rate: ``repeats`` n x n x n matmuls, timed."""
    import torch

    a, b = (torch.randn(n, n, device=device, dtype=torch.bfloat16) for _ in range(2))
    for _ in range(3):
        a @ b
    _sync(device)
    started = time.perf_counter()
    for _ in range(repeats):
        a @ b
    _sync(device)
    seconds = time.perf_counter() - started
    return {"n": n, "tflops": 2 * n**3 * repeats / seconds / 1e12}


def compare_steps(name: str, tcfg, models, pairs: list[dict], warmup: int, steps: int,
                  device: str, peak_flops: float) -> dict:
    """The platform's step and the bare loop's, on the same batches."""
    import numpy as np

    from biolord_ray.training import loop, phases

    phase = phases.CONTRASTIVE if name == "contrastive" else phases.DISTILL
    step = loop.build_step(phase, tcfg, models, device, 1, warmup + steps)
    width = step.model.get_embedding_dimension()
    rows = _rows(name, pairs, width, tcfg.batch_size, warmup + steps)
    batches = [step.collate({k: np.asarray(v) for k, v in r.items()}) for r in rows]
    parameters = _non_embedding_parameters(step.model)
    platform = _timed(step, batches, warmup, device)
    del step
    _free(device)
    bare = _timed(bare_step(name, tcfg, device), batches, warmup, device)
    _free(device)
    tokens = sum(_tokens(b) for b in batches[warmup:])
    result = {}
    for side, seconds in (("platform", platform), ("bare", bare)):
        result[side] = {"steps_per_second": steps / seconds,
                        "pairs_per_second": steps * tcfg.batch_size / seconds,
                        "tokens_per_second": tokens / seconds,
                        "mfu": 6 * parameters * tokens / seconds / peak_flops}
    result["ratio"] = bare / platform
    return result


def bare_step(name: str, tcfg, device: str):
    """One step of a bare sentence-transformers loop: the model, its loss, AdamW."""
    import torch
    from sentence_transformers.sentence_transformer.losses import (
        MSELoss,
        MultipleNegativesRankingLoss,
    )

    from biolord_ray.models.encode import load_sentence_model, sentence_model_dir
    from biolord_ray.training.loop import _to_device, resolve_precision

    torch.manual_seed(tcfg.seed)
    model = load_sentence_model(sentence_model_dir(tcfg.base_model), device=device)
    model.max_seq_length = tcfg.max_seq_length
    if name == "contrastive":
        loss_fn = MultipleNegativesRankingLoss(model, scale=tcfg.scale,
                                               directions=("query_to_doc", "doc_to_query"),
                                               partition_mode="per_direction")
    else:
        loss_fn = MSELoss(model)
    optimizer = torch.optim.AdamW(model.parameters(), lr=tcfg.lr, weight_decay=tcfg.weight_decay)
    bf16 = resolve_precision(tcfg) != "fp32"
    model.train()

    def step(batch: dict):
        batch = _to_device(batch, device)
        with torch.autocast(device, dtype=torch.bfloat16, enabled=bf16):
            if name == "contrastive":
                loss = loss_fn([batch["anchor"], batch["positive"]], None)
            else:
                loss = loss_fn([batch["text"]], batch["target"])
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), tcfg.grad_clip)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return loss
    return step


def compare_encoders(tcfg, pairs: list[dict], device: str, peak_flops: float,
                     n_texts: int) -> dict:
    import numpy as np

    from biolord_ray.models.encode import ENCODER_CALL_TEXTS, EncoderActor, encode

    texts = [t for p in pairs for t in (p["anchor"], p["positive"])]
    texts = [texts[i % len(texts)] for i in range(n_texts)]
    batch_size = tcfg.batch_size if device == "cpu" else 256
    actor = EncoderActor(tcfg.base_model, batch_size, bf16_autocast=True)
    actor.model.max_seq_length = tcfg.max_seq_length
    parameters = _non_embedding_parameters(actor.model)
    tokens = int(sum(len(ids) for ids in actor.model.tokenizer(
        texts, truncation=True, max_length=tcfg.max_seq_length)["input_ids"]))
    calls = [np.asarray(texts[i:i + ENCODER_CALL_TEXTS])
             for i in range(0, n_texts, ENCODER_CALL_TEXTS)]
    actor({"text": calls[0][:batch_size]})  # warm-up
    _sync(device)
    started = time.perf_counter()
    for call in calls:
        actor({"text": call})
    _sync(device)
    platform = time.perf_counter() - started
    started = time.perf_counter()
    encode(actor.model, texts, batch_size, bf16_autocast=True)  # the bare model.encode
    _sync(device)
    bare = time.perf_counter() - started
    result = {side: {"texts_per_second": n_texts / seconds, "tokens_per_second": tokens / seconds,
                     "mfu": 2 * parameters * tokens / seconds / peak_flops}
              for side, seconds in (("platform", platform), ("bare", bare))}
    result.update(texts=n_texts, batch_size=batch_size, ratio=bare / platform)
    return result


def _rows(name: str, pairs: list[dict], width: int, batch_size: int, n_batches: int):
    """Dataset rows of the phase, one dict of lists per batch. The distillation targets are
    random unit vectors: the step's cost does not depend on their values."""
    import numpy as np

    rng = np.random.default_rng(0)
    batches = []
    for i in range(n_batches):
        chunk = pairs[i * batch_size:(i + 1) * batch_size]
        if name == "contrastive":
            batches.append({k: [p[k] for p in chunk] for k in ("concept_id", "anchor",
                                                               "positive")})
        else:
            targets = rng.standard_normal((len(chunk), width)).astype(np.float32)
            targets /= np.linalg.norm(targets, axis=1, keepdims=True)
            batches.append({"text": [p["anchor" if j % 2 else "positive"]
                                     for j, p in enumerate(chunk)], "target": list(targets)})
    return batches


def _timed(step, batches: list[dict], warmup: int, device: str) -> float:
    """Seconds for the batches after the first ``warmup`` (which run untimed)."""
    for batch in batches[:warmup]:
        step(batch)
    _sync(device)
    started = time.perf_counter()
    for batch in batches[warmup:]:
        step(batch)
    _sync(device)
    return time.perf_counter() - started


def _tokens(batch: dict) -> int:
    return sum(int(v["attention_mask"].sum()) for v in batch.values()
               if isinstance(v, Mapping) and "attention_mask" in v)


def _non_embedding_parameters(model) -> int:
    return sum(p.numel() for n, p in model.named_parameters() if "embeddings" not in n)


def _sync(device: str) -> None:
    if device == "cuda":
        import torch

        torch.cuda.synchronize()


def _free(device: str) -> None:
    import gc

    gc.collect()
    if device == "cuda":
        import torch

        torch.cuda.empty_cache()


def table(report: dict) -> str:
    lines = [f"{report['device']}: {report['model']}, batch {report['batch_size']}, "
             f"max_seq_length {report['max_seq_length']}, {report['precision']}, "
             f"ZeRO-{report['zero_stage']}; measured bf16 matmul "
             f"{report['matmul']['tflops']:.1f} TFLOP/s",
             f"{'':24}{'steps/s':>10}{'pairs/s':>12}{'tokens/s':>12}{'MFU':>8}"]
    for name in ("contrastive", "distill"):
        for side in ("platform", "bare"):
            r = report[name][side]
            lines.append(f"{name + ' ' + side:24}{r['steps_per_second']:>10.2f}"
                         f"{r['pairs_per_second']:>12.1f}{r['tokens_per_second']:>12.0f}"
                         f"{r['mfu']:>8.1%}")
        lines.append(f"{name + ' platform / bare':24}{report[name]['ratio']:>10.2f} "
                     "(goal >= 0.9)")
    lines.append(f"{'':24}{'texts/s':>10}{'':>12}{'tokens/s':>12}{'MFU':>8}")
    for side in ("platform", "bare"):
        r = report["encoder"][side]
        lines.append(f"{'encoder ' + side:24}{r['texts_per_second']:>10.1f}{'':>12}"
                     f"{r['tokens_per_second']:>12.0f}{r['mfu']:>8.1%}")
    lines.append(f"{'encoder platform / bare':24}{report['encoder']['ratio']:>10.2f}")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
