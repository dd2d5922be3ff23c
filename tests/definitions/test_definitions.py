"""Definition generation: which concepts are defined under a cap, answer validation (on hand-made
answers and on a hand-labelled sample of real ones), the metrics workers export, and the
stage's ray.data.llm processor on a real vLLM CPU engine (answers, and a refused request
quarantined). Real vLLM runs, killed and resumed, are in tests/e2e/test_cluster_e2e.py."""

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq
import pytest

from biolord_ray.config import DefinitionsConfig
from biolord_ray.definitions import selection, validate
from biolord_ray.kg.schema import CONCEPT_SCHEMA
from biolord_ray.stage_outputs import DEFINITION_SCHEMA

LABELLED = Path(__file__).parents[1] / "fixtures" / "definitions" / "labelled_answers.jsonl"

PROMPT = ('Write a definition of the biomedical concept "Nocturnal enuresis" in one or two '
          "sentences. Facts from a knowledge graph:\n- also called: bedwetting; sleep "
          "enuresis\n- is a kind of: enuresis\nAnswer with the definition only.")
TERMS = ["Nocturnal enuresis", "bedwetting", "sleep enuresis", "enuresis"]
GOOD = ("Nocturnal enuresis is involuntary urination during sleep in a child old enough to "
        "be expected to stay dry at night.")


@pytest.mark.parametrize("answer, finish, reason", [
    (GOOD, "stop", ""),
    ("Bedwetting: involuntary passing of urine while asleep, common in young children.",
     "stop", ""),  # a synonym counts as mentioning the concept
    ("   \n", "stop", "empty"),
    (GOOD[:60], "length", "truncated"),
    ("I'm sorry, but I cannot provide medical definitions for this concept.", "stop",
     "refusal"),
    ("As an AI language model I do not define diseases.", "stop", "refusal"),
    ("Facts from a knowledge graph: also called bedwetting; sleep enuresis, is a kind of "
     "enuresis.", "stop", "repeats_prompt"),
    ("Enuresis at night.", "stop", "too_short"),
    ("A common fruit with yellow skin that grows in tropical climates worldwide.", "stop",
     "off_topic"),
    ("Nocturnal enuresis is a medical concept that has been extensively researched.", "stop",
     "vacuous"),
    ("Nocturnal enuresis has been widely studied and plays an important role in pediatrics.",
     "stop", "vacuous"),
    ("Nocturnal enuresis is a medical term used to describe wetting the bed during sleep.",
     "stop", ""),  # a "term" that goes on to say what it refers to
    ("Involuntary urination during sleep in a child old enough to stay dry at night.", "stop",
     ""),  # a bare noun phrase, the dictionary's own form
])
def test_validation_rules_on_hand_made_answers(answer, finish, reason):
    assert validate.check(answer, finish, PROMPT, TERMS) == reason


def test_every_reason_is_listed():
    assert set(validate.REASONS) == {"empty", "truncated", "refusal", "repeats_prompt",
                                     "too_short", "off_topic", "vacuous", "engine_error"}


MICROCEPHALY_TERMS = ["microcephaly, short stature, and impaired glucose metabolism", "MSSGM1",
                      "hereditary disease"]


def test_the_issues_vacuous_answer_is_rejected_and_a_real_definition_passes():
    vacuous = ("Microcephaly, short stature, and impaired glucose metabolism are medical "
               "concepts that have been extensively researched.")
    definition = "Microcephaly is a condition in which a baby's head is much smaller than expected."
    assert validate.check(vacuous, "stop", "", MICROCEPHALY_TERMS) == "vacuous"
    assert validate.check(definition, "stop", "", MICROCEPHALY_TERMS) == ""


def _precision_recall(rows: list[dict]) -> tuple[float, float]:
    """Of "the gate says valid" against the hand label "says what the concept is"."""
    passed = [validate.check(r["answer"], r["finish_reason"], r["user_prompt"],
                             r["concept_terms"]) == "" for r in rows]
    labels = [r["says_what_it_is"] for r in rows]
    hits = sum(p and label for p, label in zip(passed, labels, strict=True))
    return hits / sum(passed), hits / sum(labels)


def test_gate_on_the_hand_labelled_sample():
    """128 SmolLM2 answers labelled by hand (fixtures/definitions/README.md). The gate before
    "vacuous" measured precision 97/123 = 0.789, recall 97/98 = 0.990; with it 97/120 and
    97/98. Most answers it still passes wrongly define another concept (an enzyme for its
    reduced activity), which no check on the text alone can see."""
    rows = [json.loads(line) for line in LABELLED.read_text().splitlines()]
    assert len(rows) >= 100 and sum(r["says_what_it_is"] for r in rows) == 98
    precision, recall = _precision_recall(rows)
    assert precision >= 97 / 120 and recall >= 97 / 98
    vacuous = next(r for r in rows if r["concept_id"] == "MONDO:0800450")
    assert validate.check(vacuous["answer"], "stop", vacuous["user_prompt"],
                          vacuous["concept_terms"]) == "vacuous"


# ---------------------------------------------------------------------------------------
# Which concepts a capped run defines

def _concept(concept_id: str, english_synonyms: int = 0, spanish_synonyms: int = 0,
             definitions: int = 0) -> dict:
    synonyms = [{"text": f"{concept_id} name {i}", "type": "exact", "language": "en",
                 "source": "T"} for i in range(english_synonyms)]
    synonyms += [{"text": f"{concept_id} nombre {i}", "type": "other_language", "language": "es",
                  "source": "T"} for i in range(spanish_synonyms)]
    return {"concept_id": concept_id, "preferred_name": f"concept {concept_id}",
            "preferred_name_language": "en", "synonyms": synonyms,
            "definitions": [{"text": f"definition {i}", "source": "T"} for i in range(definitions)],
            "semantic_types": [], "source_vocabularies": ["T"]}


# Texts = preferred name + English synonyms + definitions.
CONCEPTS = pa.Table.from_pylist([
    _concept("C:1", definitions=1),                        # defined, 2 texts
    _concept("C:2", english_synonyms=2),                   # 3 texts
    _concept("C:3"),                                       # 1 text
    _concept("C:4", spanish_synonyms=1),                   # 1 text: Spanish names don't count
    _concept("C:5", english_synonyms=1),                   # 2 texts
    _concept("C:6", english_synonyms=3, definitions=1),    # defined, 5 texts
    _concept("C:7"),                                       # 1 text
], schema=CONCEPT_SCHEMA)
# Undefined first, fewest texts first; C:3, C:4 and C:7 tie on 1 text and are ordered by
# draw(seed, id): seed 0 gives C:4 0.137, C:3 0.428, C:7 0.752; seed 1 C:3 0.040, C:4 0.569,
# C:7 0.638.
ORDER_SEED_0 = ["C:4", "C:3", "C:7", "C:5", "C:2", "C:1", "C:6"]
ORDER_SEED_1 = ["C:3", "C:4", "C:7", "C:5", "C:2", "C:1", "C:6"]


def test_selection_order_on_a_hand_made_concept_table():
    for seed, order in ((0, ORDER_SEED_0), (1, ORDER_SEED_1)):
        keyed = selection.selection_key(CONCEPTS, seed)
        assert keyed.sort_by([(k, "ascending") for k in selection.ORDER])["concept_id"] \
            .to_pylist() == order


def test_capped_selection_with_ray_data(ray_local):
    import ray.data

    # One block per concept: the sort and the limit work across blocks.
    concepts = ray.data.from_arrow([CONCEPTS.slice(i, 1) for i in range(CONCEPTS.num_rows)])
    capped = DefinitionsConfig(max_concepts=4)
    chosen = selection.select_concepts(concepts, capped).to_arrow_refs()
    table = pa.concat_tables(ray_local.get(chosen))
    assert table["concept_id"].to_pylist() == ["C:4", "C:3", "C:7", "C:5"]
    assert table.schema.names == CONCEPT_SCHEMA.names
    reseeded = DefinitionsConfig(max_concepts=1, selection_seed=1)
    assert selection.select_concepts(concepts, reseeded).take_all()[0]["concept_id"] == "C:3"
    # Without a cap nothing is sorted or dropped.
    assert selection.select_concepts(concepts, DefinitionsConfig()) is concepts


def test_consolidation_rechecks_answers_written_under_an_older_gate(tmp_path):
    """Shards are keyed by model and template, not by gate: a rerun re-judges stored answers."""
    from biolord_ray.definitions import generate

    prompts = pa.table({"concept_id": ["A", "B"], "user_prompt": ["", ""],
                        "concept_terms": [["nocturnal enuresis"], ["microcephaly"]]})
    pq.write_table(prompts, tmp_path / "prompts.parquet")
    answers = pa.Table.from_pylist([
        {"concept_id": "A", "finish_reason": "stop", "valid": False, "reason": "off_topic",
         "definition": "Nocturnal enuresis is involuntary urination during sleep."},
        {"concept_id": "B", "finish_reason": "stop", "valid": True, "reason": "",
         "definition": "Microcephaly is a medical concept that has been extensively studied."},
    ], schema=DEFINITION_SCHEMA)
    table = generate._recheck(answers, pafs.LocalFileSystem(), str(tmp_path), min_words=5)
    assert table.schema == DEFINITION_SCHEMA
    assert table.select(["valid", "reason"]).to_pylist() == [
        {"valid": True, "reason": ""}, {"valid": False, "reason": "vacuous"}]


def test_a_failed_request_is_stored_as_an_engine_error_and_stays_one_on_recheck(tmp_path):
    """ray.data.llm hands a request the engine failed on (should_continue_on_error) past the
    postprocess with its error message; it becomes an invalid answer, not a failed batch."""
    from biolord_ray.definitions import generate

    params = {"max_tokens": 8, "temperature": 0.0}
    failed = {"concept_id": "B", "prompt": "...", "num_input_tokens": 0, "request_id": -1,
              "__inference_error__": "ValueError: prompt of 5000 tokens > max_model_len 4096"}
    answered = {**generate._to_definition(
        {"concept_id": "A", "generated_text": "Nocturnal enuresis is bedwetting during sleep.",
         "num_generated_tokens": 7, "num_input_tokens": 30, "time_taken_llm": 0.5,
         "user_prompt": "", "concept_terms": ["nocturnal enuresis"]}, "m", "t", params, 5),
        "__inference_error__": ""}
    rows = [generate._quarantine_engine_error(dict(r), "m", "t", params)
            for r in (answered, failed)]
    table = pa.Table.from_pylist(rows, schema=DEFINITION_SCHEMA)
    assert table.select(["concept_id", "finish_reason", "valid", "reason"]).to_pylist() == [
        {"concept_id": "A", "finish_reason": "stop", "valid": True, "reason": ""},
        {"concept_id": "B", "finish_reason": "error", "valid": False, "reason": "engine_error"}]
    assert "max_model_len" in table["definition"][1].as_py()

    prompts = pa.table({"concept_id": ["A", "B"], "user_prompt": ["", ""],
                        "concept_terms": [["nocturnal enuresis"], ["microcephaly"]]})
    pq.write_table(prompts, tmp_path / "prompts.parquet")
    rechecked = generate._recheck(table, pafs.LocalFileSystem(), str(tmp_path), min_words=5)
    assert rechecked["reason"].to_pylist() == ["", "engine_error"]
    assert generate._summary(rechecked, "m", "t", DefinitionsConfig(max_tokens=8))[
        "invalid_by_reason"] == {"engine_error": 1}


def test_steady_rate_runs_from_the_first_request_in_to_the_last_answer_out(tmp_path):
    """Each answer carries its time out and its time in the engine; the steady rate leaves
    the engine's start out, and shards of older runs (no timing) give none."""
    from biolord_ray.definitions import generate

    fs = pafs.LocalFileSystem()
    timed = [pa.table({"output_tokens": pa.array([10, 20], pa.int32()),
                       "answered_at": [100.0, 104.0], "llm_seconds": [2.0, 3.0]}),
             pa.table({"output_tokens": pa.array([30], pa.int32()),
                       "answered_at": [110.0], "llm_seconds": [5.0]})]
    files = []
    for i, shard in enumerate(timed):
        files.append(str(tmp_path / f"shard-{i}.parquet"))
        pq.write_table(shard, files[-1])
    rates = generate._throughput(fs, files, since=0.0, seconds=20.0)
    # First request in at 100 - 2 = 98, last answer out at 110: 60 tokens in 12 s.
    assert rates["steady_output_tokens_per_second"] == 5.0
    assert rates["output_tokens_per_second"] == 3.0  # 60 tokens over the 20 s of the run
    assert rates["generated_this_run"] == 3

    old = str(tmp_path / "old.parquet")
    pq.write_table(timed[0].select(["output_tokens"]), old)
    assert generate._throughput(fs, [old], since=0.0, seconds=20.0)[
        "steady_output_tokens_per_second"] is None


def test_answer_metrics_reach_the_node_metrics_endpoint(ray_local, node_metrics):
    """Counters incremented in Ray workers appear on the node's Prometheus endpoint."""
    from biolord_ray.definitions import generate

    @ray_local.remote(num_cpus=0)
    def answer(reason, tokens):
        generate._record_answer(reason, tokens)

    # An empty answer or a failed request generated no tokens (Counter.inc refuses 0).
    ray_local.get([answer.remote("", 12), answer.remote("off_topic", 5),
                   answer.remote("engine_error", 0)])
    node_metrics.wait_for("ray_biolord_definitions_generated_total", lambda lines: all(
        any(f'outcome="{o}"' in line for line in lines)
        for o in ("valid", "off_topic", "engine_error")))


@pytest.mark.slow
def test_ray_data_vllm_answers_and_quarantines_a_request_the_engine_refuses(ray_local):
    """The stage's ray.data.llm processor on a real vLLM CPU engine (the packaged SmolLM2):
    answers come back in the stage's row form, and a prompt longer than the engine's
    max_model_len fails alone, stored as an engine_error, while its batch is answered."""
    from biolord_ray.config import ModelsConfig
    from biolord_ray.definitions import generate

    # float32: on CPUs with AVX512-BF16 vLLM would pick bf16, whose greedy path differs.
    dcfg = DefinitionsConfig(batch_size=8, max_tokens=24, engine_kwargs={
        "enforce_eager": True, "kv_cache_memory_bytes": 256 << 20, "max_model_len": 512,
        "dtype": "float32"})
    rows = [
        # Garbage weights (a wrong Q/K permutation or tying in the packaged conversion) would
        # not answer this one. The system prompt is the one SmolLM2's chat template defaults to.
        {"concept_id": "capital",
         "system_prompt": "You are a helpful AI assistant named SmolLM, trained by Hugging Face",
         "user_prompt": "What is the capital of France?", "concept_terms": ["France"]},
        {"concept_id": "asthma", "system_prompt": "You are a medical lexicographer.",
         "user_prompt": "Define asthma in one sentence.", "concept_terms": ["asthma"]},
        {"concept_id": "too_long", "system_prompt": "You are a medical lexicographer.",
         "user_prompt": "Define asthma. " + "Asthma is a disease of the airways. " * 200,
         "concept_terms": ["asthma"]},
    ]
    answers = generate._generate(ray_local.data.from_items(rows), dcfg, "packaged:SmolLM2",
                                 "t", ModelsConfig()).take_all()
    by_id = {a["concept_id"]: a for a in answers}
    assert sorted(by_id) == ["asthma", "capital", "too_long"]
    assert "paris" in by_id["capital"]["definition"].lower()
    assert by_id["asthma"]["definition"].strip() and by_id["asthma"]["output_tokens"] > 0
    assert {by_id[c]["finish_reason"] for c in ("asthma", "capital")} <= {"stop", "length"}
    refused = by_id["too_long"]
    assert (refused["reason"], refused["finish_reason"], refused["valid"]) == (
        "engine_error", generate.ENGINE_ERROR_FINISH, False)
    assert refused["definition"]  # the engine's message, kept for the reader
