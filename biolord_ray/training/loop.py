"""Ray Train + DeepSpeed: the training loop shared by the contrastive and distillation phases.

``fit`` builds a ``TorchTrainer`` whose workers each run ``train_loop_per_worker``:

* the model is a sentence-transformers encoder inside the phase's loss module; DeepSpeed
  wraps that module and owns the optimiser (AdamW), the warm-up/linear-decay schedule
  (WarmupDecayLR), ZeRO, bf16 or mixed precision, gradient accumulation and clipping, all
  from the config;
* rows stream in from the Ray Dataset shard (``get_dataset_shard``), tokenised by the phase's
  collate function; where the loss allows, micro-batches are grouped by text length;
* every ``checkpoint_every`` steps and at each epoch end the workers validate (validation loss
  on all workers; the fast evaluation suite on rank 0, run on the model just exported, with
  the threads of the node's other workers, which wait for it at the report, on CPU) and
  save a checkpoint: every rank writes its DeepSpeed shard and rank 0 adds the exported
  sentence-transformers model (``model/``) and the loop state, all reported through
  ``ray.train.report``; Ray Train keeps the best ``keep_checkpoints`` by ``val_score``;
* after a worker failure Ray Train restarts the workers (``FailureConfig``) and the loop
  resumes from the last checkpoint: weights, optimiser, schedule, step and position in the
  epoch (the rows already trained on in that epoch are skipped).
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from biolord_ray.config import ModelsConfig, TrainConfig
from biolord_ray.models.encode import EXPORT_SUBDIR  # noqa: F401  (the stages read it here)

log = logging.getLogger(__name__)

DEEPSPEED_DIR = "deepspeed"
DEEPSPEED_TAG = "state"
STATE_FILE = "train_state.json"

SCORE = "val_score"


@dataclass
class Phase:
    """What differs between training phases."""

    name: str
    # (model, train config) -> the loss module DeepSpeed wraps; its forward takes the
    # collated batch as keyword arguments and returns the loss.
    make_loss: Callable[[Any, TrainConfig], Any]
    # model -> function turning a batch of dataset rows (dict of numpy arrays) into those
    # keyword arguments (tensors).
    make_collate: Callable[[Any], Callable[[dict[str, np.ndarray]], dict]]
    # Score the base model before training (step 0 of the history). The distillation grid
    # turns it off: every trial starts from the same base model, scored once by the driver.
    validate_base: bool = True
    # The text column by whose length micro-batches are grouped (``micro_batches``), or
    # None. Only for losses where a row's loss does not depend on the other rows of its
    # batch: regression onto targets, not the contrastive loss's in-batch negatives.
    group_by_length: str | None = None


@dataclass
class LoopState:
    """Where the loop is; saved in every checkpoint."""

    step: int = 0            # optimiser steps done
    epoch: int = 0
    micro_batch: int = 0     # micro-batches of ``epoch`` already trained on
    history: list[dict] = field(default_factory=list)  # one row per validation


def resolve_precision(tcfg: TrainConfig) -> str:
    """``tcfg.precision``, with "auto" made concrete for this machine (see TrainConfig)."""
    if tcfg.precision != "auto":
        return tcfg.precision
    return "bf16-mixed" if tcfg.use_gpu or cpu_has_bf16() else "fp32"


def cpu_has_bf16() -> bool:
    """Whether this CPU multiplies bf16 natively (AMX or AVX512-BF16; oneDNN uses them). The
    flags are read from /proc/cpuinfo: torch has no public query for them."""
    try:
        with open("/proc/cpuinfo") as f:
            flags = next((line.split(":", 1)[1].split() for line in f
                          if line.startswith("flags")), [])
    except OSError:
        return False
    return "amx_bf16" in flags or "avx512_bf16" in flags


def deepspeed_config(tcfg: TrainConfig, world_size: int, total_steps: int) -> dict:
    """The DeepSpeed config for one run, with ``tcfg.deepspeed`` merged over it."""
    precision = resolve_precision(tcfg)
    config = {
        "train_micro_batch_size_per_gpu": tcfg.batch_size,
        "gradient_accumulation_steps": tcfg.grad_accumulation,
        "train_batch_size": tcfg.batch_size * tcfg.grad_accumulation * world_size,
        "gradient_clipping": tcfg.grad_clip,
        "zero_optimization": {"stage": tcfg.zero_stage},
        "bf16": {"enabled": precision == "bf16"},
        # Mixed precision: the forward under torch.autocast, weights, gradients and their
        # all-reduce in fp32 (no module's gradients are reduced in bf16).
        "torch_autocast": {"enabled": precision == "bf16-mixed", "dtype": "bfloat16",
                           "lower_precision_safe_modules": []},
        # torch's AdamW on CPU: DeepSpeed's own would JIT-compile fused_adam, which needs CUDA.
        "optimizer": {"type": "AdamW", "params": {
            "lr": tcfg.lr, "weight_decay": tcfg.weight_decay, "torch_adam": not tcfg.use_gpu}},
        "scheduler": {"type": "WarmupDecayLR", "params": {
            "warmup_min_lr": 0.0, "warmup_max_lr": tcfg.lr, "warmup_type": "linear",
            "warmup_num_steps": max(1, int(tcfg.warmup_ratio * total_steps)),
            "total_num_steps": max(total_steps, 1)}},
        "steps_per_print": 10**9,  # the loop logs progress itself
    }
    return _merge(config, tcfg.deepspeed)


def _merge(base: dict, override: dict) -> dict:
    merged = dict(base)
    for key, value in override.items():
        merged[key] = _merge(base[key], value) if isinstance(value, dict) and isinstance(
            base.get(key), dict) else value
    return merged


def plan_steps(n_rows: int, tcfg: TrainConfig) -> tuple[int, int]:
    """(optimiser steps per epoch, total steps) for ``n_rows`` training rows.

    Each worker gets an equal share of the rows (Ray Train splits with ``equal=True``) and
    drops its last partial batch, so every worker runs the same number of steps."""
    micro_batches = (n_rows // tcfg.num_workers) // tcfg.batch_size
    steps_per_epoch = micro_batches // tcfg.grad_accumulation
    if steps_per_epoch == 0:
        raise ValueError(
            f"{n_rows} training rows do not fill one step of batch_size {tcfg.batch_size} x "
            f"{tcfg.num_workers} workers x grad_accumulation {tcfg.grad_accumulation}; "
            "lower batch_size or num_workers")
    total = steps_per_epoch * tcfg.epochs
    if tcfg.max_steps is None:
        return steps_per_epoch, total
    if tcfg.max_steps < 1:  # load_config refuses it; a TrainConfig built in code may not
        raise ValueError(f"max_steps {tcfg.max_steps}: must be positive, or None to train "
                         "every epoch")
    return steps_per_epoch, min(total, tcfg.max_steps)


def read_datasets(train: str, validation: str, filesystem, columns: list[str],
                  tcfg: TrainConfig) -> dict:
    """The Ray Datasets ``fit`` takes from two Parquet outputs: "train", and "validation" (at
    most ``tcfg.max_validation_rows`` rows) when it fills at least one batch on every worker."""
    import pyarrow.dataset as pads
    import ray.data

    found = {"train": ray.data.read_parquet(train, filesystem=filesystem)
             .select_columns(columns)}
    # The first rows in file order (the split is written shuffled), read in the driver: the
    # same rows at every validation and after a resume, which Dataset.limit does not promise.
    if tcfg.max_validation_rows is None:
        rows = ray.data.read_parquet(validation, filesystem=filesystem).select_columns(columns)
    else:
        held_out = pads.dataset(validation, filesystem=filesystem, format="parquet")
        rows = ray.data.from_arrow(held_out.head(tcfg.max_validation_rows, columns=columns))
    if rows.count() >= tcfg.batch_size * tcfg.num_workers:
        found["validation"] = rows
    return found


def fit(phase: Phase, tcfg: TrainConfig, models: ModelsConfig, datasets: dict, suite,
        storage_path: str, storage_filesystem, name: str, callbacks: list | None = None):
    """Train on Ray Train; returns the ``ray.train.Result``.

    ``datasets``: "train" (and optionally "validation") Ray Datasets of the phase's rows.
    ``suite``: the fast EvalSuite scored on rank 0 at each checkpoint, or None.
    A run with the same ``name`` under ``storage_path`` resumes from its last checkpoint.
    ``callbacks``: Ray Train callbacks (a Tune trial passes ``TuneReportCallback``).
    """
    from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    steps_per_epoch, total_steps = plan_steps(datasets["train"].count(), tcfg)
    log.info("%s: %d steps (%d per epoch) on %d workers, %s", phase.name, total_steps,
             steps_per_epoch, tcfg.num_workers, resolve_precision(tcfg))
    trainer = TorchTrainer(
        train_loop_per_worker,
        train_loop_config={"phase": phase, "train": tcfg, "models": models, "suite": suite,
                           "total_steps": total_steps,
                           "has_validation": "validation" in datasets},
        scaling_config=ScalingConfig(num_workers=tcfg.num_workers, use_gpu=tcfg.use_gpu,
                                     resources_per_worker={"CPU": tcfg.cpus_per_worker}),
        run_config=RunConfig(
            name=name, storage_path=storage_path, storage_filesystem=storage_filesystem,
            callbacks=callbacks,
            failure_config=FailureConfig(max_failures=tcfg.max_failures),
            checkpoint_config=CheckpointConfig(num_to_keep=tcfg.keep_checkpoints,
                                               checkpoint_score_attribute=SCORE,
                                               checkpoint_score_order="max")),
        datasets=datasets,
    )
    return trainer.fit()


# ---------------------------------------------------------------------------------------
# The training step: built the same way on a Ray Train worker and in a plain process
# (benchmarks/gpu_step.py times it on one GPU without Ray).

@dataclass
class Step:
    """One worker's model, DeepSpeed engine and collate function; calling it trains on one
    collated micro-batch (forward, backward, and the optimiser step at the end of each
    gradient-accumulation window) and returns the loss."""

    engine: Any
    model: Any        # the SentenceTransformer inside the phase's loss module
    collate: Callable[[dict[str, np.ndarray]], dict]
    base_dir: str     # the base model's directory
    device: Any

    def __call__(self, batch: dict):
        loss = self.engine(**_to_device(batch, self.device))
        self.engine.backward(loss)
        self.engine.step()
        return loss


def build_step(phase: Phase, tcfg: TrainConfig, models: ModelsConfig, device, world_size: int,
               total_steps: int) -> Step:
    """Load the base model, wrap the phase's loss in a DeepSpeed engine (``deepspeed_config``)
    and make the collate function. Needs a torch process group: Ray Train's on a worker,
    ``single_process_group()`` in a plain process."""
    import deepspeed
    import torch

    from biolord_ray.models.encode import load_sentence_model, sentence_model_dir

    torch.manual_seed(tcfg.seed)
    base_dir = sentence_model_dir(tcfg.base_model, models.cache_dir, models.trust_remote_code)
    model = load_sentence_model(base_dir, device=str(device),
                                trust_remote_code=models.trust_remote_code)
    model.max_seq_length = tcfg.max_seq_length
    loss_module = phase.make_loss(model, tcfg)
    if not tcfg.use_gpu:
        # DeepSpeed's CPU backend JIT-compiles a shared-memory all-reduce op with g++ when it
        # starts (20 to 80 s on a cold ~/.cache/torch_extensions, again whenever another
        # environment rebuilt it there); only DeepSpeed's inference tensor parallelism uses it,
        # training communicates through the torch process group (gloo). Marked unavailable,
        # it is not built. (DeepSpeed has no setting for this; it keeps this dict for edits.)
        deepspeed.ops.__compatible_ops__["deepspeed_shm_comm"] = False
    engine, *_ = deepspeed.initialize(
        model=loss_module, model_parameters=[p for p in loss_module.parameters()
                                             if p.requires_grad],
        config=deepspeed_config(tcfg, world_size, total_steps))
    return Step(engine, model, phase.make_collate(model), base_dir, device)


def single_process_group(use_gpu: bool) -> None:
    """A one-process torch process group (NCCL on a GPU, gloo otherwise) for driving
    ``build_step`` without Ray Train, which sets one up on each of its workers."""
    import socket

    import torch.distributed as dist

    if dist.is_initialized():
        return
    with socket.socket() as free:  # a free port for the group's rendezvous
        free.bind(("127.0.0.1", 0))
        port = free.getsockname()[1]
    os.environ.setdefault("LOCAL_RANK", "0")  # DeepSpeed reads it to place the engine
    dist.init_process_group("nccl" if use_gpu else "gloo",
                            init_method=f"tcp://127.0.0.1:{port}", rank=0, world_size=1)


# ---------------------------------------------------------------------------------------
# On each Ray Train worker

def train_loop_per_worker(config: dict) -> None:
    started = time.time()
    import deepspeed  # noqa: F401  (timed with the other imports)
    import ray.train
    import ray.train.torch

    imported = time.time()
    phase: Phase = config["phase"]
    tcfg: TrainConfig = config["train"]
    models: ModelsConfig = config["models"]
    total_steps: int = config["total_steps"]
    context = ray.train.get_context()
    rank, world_size = context.get_world_rank(), context.get_world_size()
    device = ray.train.torch.get_device()

    step = build_step(phase, tcfg, models, device, world_size, total_steps)
    engine = step.engine
    loaded = time.time()
    run = _Run(step, tcfg, config, rank, world_size, context.get_local_world_size())
    run.print(f"worker ready in {time.time() - started:.1f} s (imports "
              f"{imported - started:.1f} s, model and DeepSpeed {loaded - imported:.1f} s)")

    state = LoopState()
    checkpoint = ray.train.get_checkpoint()
    if checkpoint:
        with checkpoint.as_directory() as directory:
            engine.load_checkpoint(os.path.join(directory, DEEPSPEED_DIR), tag=DEEPSPEED_TAG)
            with open(os.path.join(directory, STATE_FILE)) as f:
                state = LoopState(**json.load(f))
        run.print(f"resumed from the checkpoint of step {state.step} (epoch {state.epoch}, "
                  f"{state.micro_batch} micro-batches in)")
    elif phase.validate_base:
        # The base model's scores: step 0 of the validation curve.
        state.history.append(run.validate(state, step.base_dir))
    run.start_window()
    resumed_from = run.first_step = state.step
    if checkpoint and state.step >= total_steps:
        # Finished before this restart (e.g. a Tune trial restarted after its run ended):
        # report the final result again so that the caller's view (Tune) has it.
        ray.train.report({**state.history[-1], "resumed_from": resumed_from,
                          "total_steps": total_steps},
                         checkpoint=checkpoint if rank == 0 else None)
        return

    train_shard = ray.train.get_dataset_shard("train")
    done = state.step >= total_steps
    for epoch in range(state.epoch, tcfg.epochs):
        if done:
            break
        skip = state.micro_batch if epoch == state.epoch else 0
        state.epoch, state.micro_batch = epoch, 0
        batches = micro_batches(train_shard, tcfg, step.collate, tcfg.seed + epoch,
                                phase.group_by_length)
        for batch in run.timed(batches):
            state.micro_batch += 1
            if state.micro_batch <= skip:
                continue  # trained on before the checkpoint we resumed from
            run.train_step(batch)
            if engine.global_steps == state.step:
                continue  # accumulating gradients
            state.step = engine.global_steps
            if state.step % tcfg.log_every == 0:
                run.log_progress(state)
            done = state.step >= total_steps
            if done or (tcfg.checkpoint_every and state.step % tcfg.checkpoint_every == 0):
                run.checkpoint(state, resumed_from)
            if done:
                break
        else:
            state.epoch, state.micro_batch = epoch + 1, 0
            if not state.history or state.history[-1]["step"] != state.step:
                run.checkpoint(state, resumed_from)


# Micro-batches sorted by length together (HF Trainer's ``group_by_length`` megabatches).
LENGTH_GROUP_BATCHES = 8


def micro_batches(shard, tcfg: TrainConfig, collate: Callable, seed: int,
                  length_column: str | None):
    """One epoch of a worker's collated micro-batches of ``tcfg.batch_size`` rows, locally
    shuffled, the last partial one dropped (every worker runs the same number of steps).

    With ``length_column``, rows come ``LENGTH_GROUP_BATCHES`` micro-batches at a time, are
    sorted by that column's length (characters stand in for tokens) and cut into
    micro-batches, which are trained on in a seeded random order. A batch pads to its
    longest text; on the embedded default's distillation texts (names of a few tokens,
    definitions up to ``max_seq_length``) a mixed batch of 32 held about 1,800 tokens with
    padding and a grouped one about 700, and a step took half the time. Ray Data and
    sentence-transformers have no length-grouped batching for a streamed dataset, hence this.
    """
    shuffle = {"local_shuffle_buffer_size": tcfg.batch_size * LENGTH_GROUP_BATCHES,
               "local_shuffle_seed": seed}
    if length_column is None:
        yield from shard.iter_torch_batches(batch_size=tcfg.batch_size, drop_last=True,
                                            collate_fn=collate, **shuffle)
        return
    order_rng = np.random.default_rng(seed)
    for group in shard.iter_batches(batch_size=tcfg.batch_size * LENGTH_GROUP_BATCHES,
                                    batch_format="numpy", **shuffle):
        # Whole micro-batches only (the rows left over were shuffled: a random remainder).
        kept = len(group[length_column]) // tcfg.batch_size * tcfg.batch_size
        lengths = np.array([len(text) for text in group[length_column][:kept]])
        by_length = np.argsort(lengths, kind="stable").reshape(-1, tcfg.batch_size)
        for rows in by_length[order_rng.permutation(len(by_length))]:
            yield collate({column: values[rows] for column, values in group.items()})


class _Run:
    """One worker's engine, data and bookkeeping (kept out of the loop body for reading)."""

    def __init__(self, step: Step, tcfg: TrainConfig, config: dict, rank: int,
                 world_size: int, local_world_size: int):
        from ray.util.metrics import Gauge

        self.step, self.tcfg = step, tcfg
        self.engine, self.model, self.collate = step.engine, step.model, step.collate
        self.precision = resolve_precision(tcfg)
        self.phase_name = config["phase"].name
        self.suite = config["suite"]
        self.has_validation = config["has_validation"]
        self.total_steps = config["total_steps"]
        self.rank, self.world_size, self.device = rank, world_size, step.device
        self.local_world_size = local_world_size  # workers on this node, rank 0 included
        self.started = time.time()
        self.first_step = 0
        self.start_window()
        tags = ("phase",)
        self.gauges = {name: Gauge(f"biolord_train_{name}", description, tag_keys=tags)
                       for name, description in (
                           ("step", "optimiser steps done"),
                           ("loss", "mean training loss since the last checkpoint"),
                           ("pairs_per_second", "training rows per second, all workers"),
                           ("val_score", "fast evaluation suite score at the last checkpoint"))}

    def start_window(self) -> None:
        """Restart the training-loss and throughput averages (validation time excluded)."""
        self.loss_sum, self.rows, self.batches = 0.0, 0, 0
        self.waited = 0.0  # seconds spent waiting for the next batch (input-bound if large)
        self.window_started = time.time()

    def timed(self, batches):
        """``batches``, timing how long each takes to arrive."""
        iterator = iter(batches)
        while True:
            started = time.time()
            try:
                batch = next(iterator)
            except StopIteration:
                return
            self.waited += time.time() - started
            yield batch

    def print(self, message: str) -> None:
        if self.rank == 0:
            print(f"[{self.phase_name}] {message}", flush=True)

    def train_step(self, batch: dict) -> None:
        loss = self.step(batch)
        self.loss_sum += float(loss.detach())
        self.batches += 1
        self.rows += self.tcfg.batch_size * self.world_size

    def _window(self) -> dict:
        seconds = max(time.time() - self.window_started, 1e-9)
        metrics = {"train_loss": self.loss_sum / max(self.batches, 1),
                   "pairs_per_second": self.rows / seconds,
                   "input_wait_share": self.waited / seconds,
                   "lr": float(self.engine.get_lr()[0])}
        return metrics

    def log_progress(self, state: LoopState) -> None:
        metrics = self._window()
        # Steps and seconds of this attempt (a restarted worker group starts a new one).
        elapsed = time.time() - self.started
        eta = elapsed / max(state.step - self.first_step, 1) * (self.total_steps - state.step)
        self.print(f"step {state.step}/{self.total_steps} epoch {state.epoch} "
                   f"loss {metrics['train_loss']:.4f} lr {metrics['lr']:.2e} "
                   f"{metrics['pairs_per_second']:.1f} pairs/s "
                   f"({100 * metrics['input_wait_share']:.0f}% waiting for input) "
                   f"eta {eta / 60:.1f} min")
        if self.rank == 0:
            tags = {"phase": self.phase_name}
            self.gauges["step"].set(state.step, tags)
            self.gauges["loss"].set(metrics["train_loss"], tags)
            self.gauges["pairs_per_second"].set(metrics["pairs_per_second"], tags)

    def validate(self, state: LoopState, model_dir: str, others_wait: bool = False) -> dict:
        """Validation loss (all workers) and the fast suite on ``model_dir`` (rank 0).
        ``others_wait``: the other workers wait for rank 0 meanwhile (at a checkpoint's
        report), so on CPU it scores the suite with their threads too."""
        import torch
        import torch.distributed as dist

        started = time.time()
        row: dict[str, Any] = {"step": state.step, "epoch": state.epoch}
        if self.has_validation:
            import ray.train

            # On the device: NCCL reduces only GPU tensors.
            total, batches = torch.zeros(2, device=self.device), 0
            self.engine.eval()
            with torch.no_grad():
                for batch in ray.train.get_dataset_shard("validation").iter_torch_batches(
                        batch_size=self.tcfg.batch_size, drop_last=True,
                        collate_fn=self.collate):
                    total[0] += float(self.engine(**_to_device(batch, self.device)))
                    batches += 1
            self.engine.train()
            total[1] = batches
            if dist.is_initialized():
                dist.all_reduce(total)
            if total[1]:
                row["val_loss"] = float(total[0] / total[1])
        loss_seconds = time.time() - started
        if self.rank == 0 and self.suite is not None:
            from biolord_ray.evaluation import main_score
            from biolord_ray.models.encode import Embedder, load_sentence_model

            threads = torch.get_num_threads()
            if others_wait and not self.tcfg.use_gpu:
                # 1.3 to 1.7x faster with two threads than one on a small fast suite. Not
                # for the base model's score: the others then start their first step.
                torch.set_num_threads(threads * self.local_world_size)
            try:
                scored = load_sentence_model(model_dir, device=str(self.device))
                # Encoded as it trains: under bf16 autocast when the forward pass runs in it.
                results = self.suite.run(scored, Embedder(
                    scored, bf16_autocast=self.precision == "bf16-mixed"))
            finally:
                torch.set_num_threads(threads)
            row.update({f"val/{name}": r[r["main_metric"]] for name, r in results.items()})
            row[SCORE] = main_score(results)
            del scored
        if SCORE not in row:
            # No suite: the (negated) validation loss ranks the checkpoints.
            row[SCORE] = -row["val_loss"] if "val_loss" in row else float("nan")
        self.print(f"validation ({time.time() - started:.1f} s, loss {loss_seconds:.1f} s): "
                   + ", ".join(f"{k} {v:.4f}" for k, v in row.items() if isinstance(v, float)))
        return row

    def checkpoint(self, state: LoopState, resumed_from: int) -> None:
        """Save a DeepSpeed checkpoint (every rank) with the exported model (rank 0), validate
        the exported model and report both to Ray Train."""
        import ray.train

        window = self._window()
        with tempfile.TemporaryDirectory(prefix="biolord-ckpt-") as directory:
            self.engine.save_checkpoint(os.path.join(directory, DEEPSPEED_DIR),
                                        tag=DEEPSPEED_TAG)
            export_dir = os.path.join(directory, EXPORT_SUBDIR)
            self._export(export_dir)
            row = {**self.validate(state, export_dir, others_wait=True), **window,
                   "resumed_from": resumed_from}
            state.history.append(row)
            if self.rank == 0:
                with open(os.path.join(directory, STATE_FILE), "w") as f:
                    json.dump(state.__dict__, f, default=float)
                self.gauges["val_score"].set(row[SCORE], {"phase": self.phase_name})
            ray.train.report({**row, "seconds": time.time() - self.started,
                              "total_steps": self.total_steps},
                             checkpoint=ray.train.Checkpoint.from_directory(directory))
        self.start_window()

    def _export(self, path: str) -> None:
        """Rank 0 writes the full model (ZeRO-3 shards gathered from every rank first)."""
        import contextlib

        import deepspeed

        gather = deepspeed.zero.GatheredParameters(list(self.model.parameters()),
                                                   modifier_rank=None) \
            if self.tcfg.zero_stage == 3 else contextlib.nullcontext()
        with gather:
            if self.rank == 0:
                save_fp32(self.model, path)


def save_fp32(model, path: str) -> None:
    """Save a SentenceTransformer with float32 weights whatever precision it trains in (bf16
    weights would make averaging runs in a soup lose precision, and transformers would load
    them as bf16)."""
    import torch

    model.save(path, create_model_card=False)
    transformer = model[0].auto_model
    if all(p.dtype == torch.float32 for p in transformer.parameters()):
        return
    state = {k: v.detach().to("cpu", torch.float32) for k, v in transformer.state_dict().items()}
    transformer.save_pretrained(path, state_dict=state)
    config_path = os.path.join(path, "config.json")
    with open(config_path) as f:
        config = json.load(f)
    config["dtype"] = "float32"
    with open(config_path, "w") as f:
        json.dump(config, f, indent=2)


def _to_device(batch, device):
    if isinstance(batch, dict):
        return {k: _to_device(v, device) for k, v in batch.items()}
    return batch.to(device) if hasattr(batch, "to") else batch

