"""Stage ``teacher_targets``: what the self-distilled model (BioLORD-2023-S) learns to output.

For each concept of the training pairs, the teacher (by default this run's contrastive model)
embeds the concept's distinct names and definitions; the concept's target is the normalised
mean of those embeddings, and every one of those texts gets it as its regression target.

A Ray Data pipeline, streaming on any cluster size, both splits at once:
pairs -> hash-partitioned by concept (one shuffle) -> one row per concept with its distinct
texts -> teacher encoder actors (``map_batches``: each call gets whole concepts, so it
averages them itself) -> Parquet, per split (train, validation). Inputs under
``targets.ray_min_pairs`` pairs go through the same grouping and encoder in the driver.
"""

from __future__ import annotations

import itertools
import logging

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from biolord_ray import stages
from biolord_ray.config import PipelineConfig
from biolord_ray.run_dir import (
    RunDir,
    StageOutputs,
    count_distinct,
    count_rows,
    run_stage,
    shuffle_partitions,
    write_parquet,
)
from biolord_ray.stage_outputs import SPLITS, targets_teacher_dir

log = logging.getLogger(__name__)

STAGE = stages.TEACHER_TARGETS
# Concepts per encoder call (about 4 texts each, so about ENCODER_CALL_TEXTS texts): see
# there why calls are large.
CONCEPTS_PER_CALL = 2048


def target_schema(dim: int) -> pa.Schema:
    return pa.schema([
        ("concept_id", pa.string()),
        ("text", pa.string()),
        ("kind", pa.string()),                        # "name", "definition" or "description"
        ("target", pa.list_(pa.float32(), dim)),      # the concept's unit-length target
    ])


def run(cfg: PipelineConfig, run_dir: RunDir, force: bool = False) -> dict:
    inputs = stages.input_identities(STAGE, cfg, run_dir)
    return run_stage(run_dir, STAGE, cfg.targets, inputs,
                     lambda staging: _build(cfg, run_dir, staging), force=force)


def _build(cfg: PipelineConfig, run_dir: RunDir, staging: str) -> StageOutputs:
    import pyarrow.parquet as pq

    model_dir = targets_teacher_dir(cfg, run_dir)
    fs = run_dir.fs
    paths = {split: run_dir.output(stages.BUILD_PAIRS, split) for split in SPLITS}
    sizes = {split: count_rows(path, fs) for split, path in paths.items()}
    if sizes["train"] == 0:
        raise ValueError(f"{paths['train']}: no training pairs, nothing to distill")
    paths = {split: path for split, path in paths.items() if sizes[split]}
    if sum(sizes.values()) < cfg.targets.ray_min_pairs:
        # A few thousand pairs encode in seconds here; encoder actors would first need a
        # shuffle and a process that imports the ML stack and loads the model (about 20 s).
        pairs = pa.concat_tables(
            _tagged(_sampled(pq.read_table(path, filesystem=fs), cfg.targets), split)
            for split, path in paths.items())
        targets = targets_in_process(pairs, model_dir, cfg.targets)
        write = _write_table
    else:
        targets = _targets_on_ray(paths, fs, model_dir, cfg.targets, sum(sizes.values()))
        write = _write_dataset
    counts = {"teacher": model_dir}
    for split in SPLITS:
        write(targets, split, f"{staging}/{split}", fs)
        counts[f"{split}_texts"] = count_rows(f"{staging}/{split}", fs)
        counts[f"{split}_concepts"] = count_distinct(f"{staging}/{split}", fs, "concept_id")
        log.info("%s: %d texts of %d concepts", split, counts[f"{split}_texts"],
                 counts[f"{split}_concepts"])
    return StageOutputs(outputs={s: s for s in SPLITS}, counts=counts)


def _targets_on_ray(paths: dict[str, str], fs, model_dir: str, tcfg, rows: int):
    import ray.data

    check_room_for_shuffles(tcfg)
    splits = []
    for split, path in paths.items():
        source = ray.data.read_parquet(path, filesystem=fs)
        if tcfg.max_concepts is not None:
            source = source.map_batches(_kept, batch_format="pyarrow", fn_kwargs={
                "chosen": sampled_concept_ids(path, fs, tcfg)})
        splits.append(source.map_batches(_tagged, batch_format="pyarrow",
                                         fn_kwargs={"split": split}))
    # Both splits in one pass: one shuffle and one start of the encoder actors. Materialised
    # (spilled to disk when large) so that writing each split reads it, not the pipeline.
    return teacher_targets(splits[0].union(*splits[1:]), model_dir, tcfg, rows).materialize()


def _write_dataset(targets, split: str, path: str, fs) -> None:
    from ray.data.expressions import col

    schema = target_schema(targets.schema().base_schema.field("target").type.list_size)
    write_parquet(targets.filter(expr=col("split") == split).drop_columns(["split"]),
                  path, fs, schema)


def _write_table(targets: pa.Table, split: str, path: str, fs) -> None:
    import pyarrow.parquet as pq

    fs.create_dir(path)
    rows = targets.filter(pc.equal(targets["split"], split)).drop_columns(["split"])
    pq.write_table(rows.cast(target_schema(rows.schema.field("target").type.list_size)),
                   f"{path}/targets.parquet", filesystem=fs)


def targets_in_process(pairs: pa.Table, model_dir: str, tcfg) -> pa.Table:
    """``teacher_targets`` in this process, for inputs of a few thousand pairs: the same
    grouping and encoder, one call over every text (sorted by length as a whole)."""
    return TargetEncoder(model_dir, tcfg.batch_size)(concept_texts(pairs, _kinds(tcfg)))


def _tagged(batch: pa.Table, split: str) -> pa.Table:
    return batch.select(["concept_id", "anchor", "positive", "kind"]).append_column(
        "split", pa.array([split] * batch.num_rows, pa.string()))


def sampled_concept_ids(path: str, fs, tcfg) -> pa.Array:
    """The ids of ``tcfg.max_concepts`` concepts of the pairs at ``path``, those with the
    lowest seeded hash of their id (``keys.draw``): a sample spread over the whole KG, the
    same on every rerun."""
    import pyarrow.parquet as pq

    ids = pq.read_table(path, filesystem=fs, columns=["concept_id"])["concept_id"]
    return _lowest_draws(ids, tcfg)


def _lowest_draws(ids, tcfg) -> pa.Array:
    from biolord_ray.keys import draw

    return pa.array(sorted(pc.unique(ids).to_pylist(), key=lambda c: draw(tcfg.seed, c))
                    [:tcfg.max_concepts], pa.string())


def _sampled(pairs: pa.Table, tcfg) -> pa.Table:
    if tcfg.max_concepts is None:
        return pairs
    return _kept(pairs, _lowest_draws(pairs["concept_id"], tcfg))


def _kept(batch: pa.Table, chosen: pa.Array) -> pa.Table:
    return batch.filter(pc.is_in(batch["concept_id"], value_set=chosen))


def check_room_for_shuffles(tcfg) -> None:
    """CPU encoder actors start with the pipeline and hold their CPUs while the shuffle before
    them waits for a free one: with every CPU taken the stage would hang, so refuse to start
    it."""
    import ray

    cpus = ray.cluster_resources().get("CPU", 0)
    if not tcfg.num_gpus and tcfg.concurrency >= cpus:
        raise ValueError(f"targets.concurrency={tcfg.concurrency} CPU encoder actors would "
                         f"hold all {cpus:g} CPUs of the cluster and leave none for the "
                         f"group-by after them; use at most {max(int(cpus) - 1, 1)} "
                         "(or GPU actors: targets.num_gpus)")


def teacher_targets(pair_rows, model_dir: str, tcfg, rows: int | None = None):
    """Ray Dataset of pairs (``pairs.PAIR_SCHEMA``, optionally with a ``split`` column kept
    as is) -> Ray Dataset of ``target_schema`` rows (and ``split``). ``rows``: how many pairs
    (sizes the shuffle; counted if not given)."""
    from biolord_ray.models.encode import encoder_pool

    rows = pair_rows.count() if rows is None else rows
    texts = pair_rows.repartition(shuffle_partitions(rows, tcfg.shuffle_partitions),
                                  keys=["concept_id"]) \
        .map_batches(concept_texts, batch_size=None, batch_format="pyarrow",
                     fn_kwargs={"kinds": _kinds(tcfg)})
    return encoder_pool(texts, model_dir, batch_size=tcfg.batch_size,
                        concurrency=tcfg.concurrency, num_gpus=tcfg.num_gpus,
                        rows_per_call=CONCEPTS_PER_CALL, actor=TargetEncoder,
                        batch_format="pyarrow")


def _kinds(tcfg) -> list[str]:
    return ["definition", "description"] if tcfg.include_descriptions else ["definition"]


def concept_texts(block: pa.Table, kinds: list[str]) -> pa.Table:
    """Pairs, every pair of a concept in this block -> one row per concept: its distinct names
    and definitions (``texts``, each once; names first) and their ``kinds``.

    Python over the rows of the whole block, not a call per concept (see
    ``prompts.collect_facts``)."""
    extra = ["split"] if "split" in block.column_names else []
    block = block.sort_by("concept_id")
    columns = [block[c].to_pylist() for c in ("concept_id", "anchor", "positive", "kind",
                                               *extra)]
    out = {"concept_id": [], "texts": [], "kinds": [], **{c: [] for c in extra}}
    for concept, rows in itertools.groupby(zip(*columns, strict=True), key=lambda r: r[0]):
        rows = list(rows)
        texts = dict.fromkeys((row[1], "name") for row in rows)
        for _, _, text, kind, *_ in rows:
            if kind in kinds and (text, "name") not in texts:
                texts.setdefault((text, kind))
        out["concept_id"].append(concept)
        out["texts"].append([text for text, _ in texts])
        out["kinds"].append([kind for _, kind in texts])
        for i, name in enumerate(extra):
            out[name].append(rows[0][4 + i])
    return pa.table(out)


class TargetEncoder:
    """A Ray Data actor holding the teacher: concepts (rows of ``concept_texts``) in, one row
    per text with its concept's target out."""

    def __init__(self, model_dir: str, batch_size: int, bf16_autocast: bool = False):
        from biolord_ray.models.encode import EncoderActor

        self.encoder = EncoderActor(model_dir, batch_size, bf16_autocast)

    def __call__(self, batch: pa.Table) -> pa.Table:
        texts = batch["texts"].combine_chunks()
        vectors = self.encoder({"text": np.asarray(texts.flatten().to_pylist(),
                                                   dtype=object)})["embedding"]
        lengths = texts.value_lengths().to_numpy()
        targets = concept_means(vectors, lengths)
        of_text = np.repeat(np.arange(len(batch)), lengths)  # each text's concept row
        out = {"concept_id": pc.take(batch["concept_id"], of_text), "text": texts.flatten(),
               "kind": batch["kinds"].combine_chunks().flatten(),
               "target": pa.FixedSizeListArray.from_arrays(
                   np.repeat(targets, lengths, axis=0).ravel(), targets.shape[1])}
        for name in batch.column_names:  # e.g. the split
            if name not in ("concept_id", "texts", "kinds"):
                out[name] = pc.take(batch[name], of_text)
        return pa.table(out)


def concept_means(vectors: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """Unit-length mean of each run of ``lengths`` consecutive rows of ``vectors`` (float64
    sums), as float32."""
    starts = np.concatenate([[0], np.cumsum(lengths)[:-1]])
    sums = np.add.reduceat(vectors.astype(np.float64), starts, axis=0)
    means = sums / lengths[:, None]
    norms = np.maximum(np.linalg.norm(means, axis=1, keepdims=True), 1e-12)
    return (means / norms).astype(np.float32)
