"""Stage ``teacher_targets``: what the self-distilled model (BioLORD-2023-S) learns to output.

For each concept of the training pairs, the teacher (by default this run's contrastive model)
embeds the concept's distinct names and definitions; the concept's target is the normalised
mean of those embeddings, and every one of those texts gets it as its regression target.

A Ray Data pipeline, streaming on any cluster size:
pairs -> group by concept (distinct texts) -> teacher encoder actors (``map_batches``)
-> group by concept (mean, normalise) -> Parquet, per split (train, validation).
"""

from __future__ import annotations

import logging

import numpy as np
import pyarrow as pa

from biolord_ray.config import PipelineConfig
from biolord_ray.run_dir import RunDir, StageOutputs, run_stage, write_parquet
from biolord_ray.training import contrastive, pairs

log = logging.getLogger(__name__)

STAGE = "teacher_targets"
SPLITS = ("train", "validation")
# Texts per encoder call. sentence-transformers sorts each call's texts by length before
# batching, and rows arrive grouped by concept (short names beside long definitions), so
# large calls pad far less: 2048 rows encoded 1.9x faster than 256 on the embedded default.
ENCODER_CALL_ROWS = 2048


def target_schema(dim: int) -> pa.Schema:
    return pa.schema([
        ("concept_id", pa.string()),
        ("text", pa.string()),
        ("kind", pa.string()),                        # "name", "definition" or "description"
        ("target", pa.list_(pa.float32(), dim)),      # the concept's unit-length target
    ])


def run(cfg: PipelineConfig, run_dir: RunDir, force: bool = False) -> dict:
    inputs = {"pairs": run_dir.stage_identity(pairs.STAGE)}
    if cfg.targets.teacher is None:
        inputs["teacher"] = run_dir.stage_identity(contrastive.STAGE)
    return run_stage(run_dir, STAGE, cfg.targets, inputs,
                     lambda staging: _build(cfg, run_dir, staging), force=force)


def teacher_dir(cfg: PipelineConfig, run_dir: RunDir) -> str:
    from biolord_ray.evaluation.embed import sentence_model_dir

    spec = cfg.targets.teacher or run_dir.output(contrastive.STAGE, "model")
    return sentence_model_dir(spec, cfg.models.cache_dir, cfg.models.trust_remote_code)


def _build(cfg: PipelineConfig, run_dir: RunDir, staging: str) -> StageOutputs:
    import ray.data

    check_room_for_shuffles(cfg.targets)
    model_dir = teacher_dir(cfg, run_dir)
    counts = {"teacher": model_dir}
    schema = None  # the target width is the teacher's embedding size, seen in its output
    for split in SPLITS:
        path = run_dir.output(pairs.STAGE, split)
        source = ray.data.read_parquet(path, filesystem=run_dir.fs)
        if source.count() == 0:  # Ray Data's shuffle (groupby) fails on an empty input
            if schema is None:
                raise ValueError(f"{path}: no training pairs, nothing to distill")
            write_parquet(ray.data.from_arrow(schema.empty_table()), f"{staging}/{split}",
                          run_dir.fs, schema)
            counts[f"{split}_texts"] = counts[f"{split}_concepts"] = 0
            continue
        if cfg.targets.max_concepts is not None:
            source = _sampled_concepts(source, path, run_dir.fs, cfg.targets)
        targets = teacher_targets(source, model_dir, cfg.targets).materialize()
        schema = schema or target_schema(len(targets.take(1)[0]["target"]))
        write_parquet(targets, f"{staging}/{split}", run_dir.fs, schema)
        counts[f"{split}_texts"] = targets.count()
        counts[f"{split}_concepts"] = len(targets.unique("concept_id"))
        log.info("%s: %d texts of %d concepts", split, counts[f"{split}_texts"],
                 counts[f"{split}_concepts"])
    return StageOutputs(outputs={s: s for s in SPLITS}, counts=counts)


def _sampled_concepts(pair_rows, path: str, fs, tcfg):
    """The pairs of ``tcfg.max_concepts`` concepts, those with the lowest seeded hash of their
    id (``kg_sets.draw``): a sample spread over the whole KG, the same on every rerun."""
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    from biolord_ray.evaluation.kg_sets import draw

    ids = pc.unique(pq.read_table(path, filesystem=fs, columns=["concept_id"])["concept_id"])
    chosen = pa.array(sorted(ids.to_pylist(), key=lambda c: draw(tcfg.seed, c))
                      [:tcfg.max_concepts], pa.string())
    return pair_rows.map_batches(lambda batch: batch.filter(pc.is_in(batch["concept_id"],
                                                                     value_set=chosen)),
                                 batch_format="pyarrow")


def check_room_for_shuffles(tcfg) -> None:
    """CPU encoder actors hold their CPUs while the group-by after them waits for a free one:
    with every CPU taken the stage would hang, so refuse to start it."""
    import ray

    cpus = ray.cluster_resources().get("CPU", 0)
    if not tcfg.num_gpus and tcfg.concurrency >= cpus:
        raise ValueError(f"targets.concurrency={tcfg.concurrency} CPU encoder actors would "
                         f"hold all {cpus:g} CPUs of the cluster and leave none for the "
                         f"group-by after them; use at most {max(int(cpus) - 1, 1)} "
                         "(or GPU actors: targets.num_gpus)")


def teacher_targets(pair_rows, model_dir: str, tcfg):
    """Ray Dataset of pairs (``pairs.PAIR_SCHEMA``) -> Ray Dataset of ``target_schema`` rows."""
    import ray.data

    from biolord_ray.evaluation.embed import EncoderActor

    kinds = ["definition", "description"] if tcfg.include_descriptions else ["definition"]
    texts = pair_rows.groupby("concept_id", num_partitions=tcfg.shuffle_partitions).map_groups(
        lambda group: concept_texts(group, kinds), batch_format="pyarrow")
    embedded = texts.map_batches(
        EncoderActor, fn_constructor_kwargs={"model_dir": model_dir,
                                             "batch_size": tcfg.batch_size},
        batch_size=ENCODER_CALL_ROWS, compute=ray.data.ActorPoolStrategy(size=tcfg.concurrency),
        num_gpus=tcfg.num_gpus, num_cpus=None if tcfg.num_gpus else 1, batch_format="numpy")
    return embedded.groupby("concept_id", num_partitions=tcfg.shuffle_partitions).map_groups(
        concept_targets, batch_format="numpy")


def concept_texts(group: pa.Table, kinds: list[str]) -> pa.Table:
    """One concept's pairs -> its distinct names and definitions (each text once)."""
    concept = group["concept_id"][0].as_py() if group.num_rows else None
    rows = dict.fromkeys((text, "name") for text in group["anchor"].to_pylist())
    for text, kind in zip(group["positive"].to_pylist(), group["kind"].to_pylist(), strict=True):
        if kind in kinds and (text, "name") not in rows:
            rows.setdefault((text, kind))
    return pa.table({"concept_id": [concept] * len(rows), "text": [t for t, _ in rows],
                     "kind": [k for _, k in rows]})


def concept_targets(group: dict[str, np.ndarray]) -> pa.Table:
    """One concept's embedded texts -> the same texts, each with the concept's target."""
    n = len(group["text"])
    mean = np.asarray(group["embedding"], dtype=np.float64).reshape(n, -1).mean(axis=0)
    target = (mean / max(np.linalg.norm(mean), 1e-12)).astype(np.float32)
    return pa.table({
        "concept_id": pa.array(group["concept_id"], pa.string()),
        "text": pa.array(group["text"], pa.string()),
        "kind": pa.array(group["kind"], pa.string()),
        "target": pa.FixedSizeListArray.from_arrays(np.tile(target, n), len(target)),
    })
