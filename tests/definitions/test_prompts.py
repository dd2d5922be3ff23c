"""The pure parts of the definition prompts (prompts.py) and of the capped selection's key
(selection.py), on hand-made rows with hand-computed answers: no Ray."""

import dataclasses
import hashlib
import json

import pyarrow as pa
import pytest

from biolord_ray.config import DefinitionsConfig
from biolord_ray.definitions import prompts, selection
from biolord_ray.keys import draw
from biolord_ray.kg.schema import CONCEPT_SCHEMA

# ---------------------------------------------------------------------------------------
# The template's identity

TEMPLATE_KEYS = ("template_version", "system_prompt", "user_prompt", "max_synonyms",
                 "max_parents", "max_relations", "max_targets")


def test_template_hash_of_the_default_is_pinned():
    """Every stored definition carries this hash, and a rerun regenerates the answers of
    another hash: it must not move when nothing in the template did."""
    cfg = DefinitionsConfig()
    assert prompts.template_hash(cfg) == "caae5969e229"
    template = {key: getattr(cfg, key) for key in TEMPLATE_KEYS}
    assert prompts.template_hash(cfg) == hashlib.sha256(
        json.dumps(template, sort_keys=True).encode()).hexdigest()[:12]


@pytest.mark.parametrize("key, value", [
    ("template_version", "v2"), ("system_prompt", "You define things."),
    ("user_prompt", "Define {name}.\n{facts}"), ("max_synonyms", 4), ("max_parents", 2),
    ("max_relations", 5), ("max_targets", 1)])
def test_template_hash_changes_with_each_part_of_the_template(key, value):
    assert prompts.template_hash(dataclasses.replace(DefinitionsConfig(), **{key: value})) \
        != prompts.template_hash(DefinitionsConfig())


@pytest.mark.parametrize("key, value", [
    ("llm", "packaged:all-MiniLM-L6-v2"), ("temperature", 0.7), ("max_tokens", 128),
    ("max_concepts", 10), ("only_missing", False), ("min_words", 8), ("batch_size", 8),
    ("concurrency", 2)])
def test_template_hash_ignores_what_does_not_shape_a_prompt(key, value):
    assert prompts.template_hash(dataclasses.replace(DefinitionsConfig(), **{key: value})) \
        == prompts.template_hash(DefinitionsConfig())


def test_relation_labels():
    assert prompts.relation_label("is_a") == "is a kind of"
    assert prompts.relation_label("finding_site") == "finding site"
    assert prompts.relation_label("has_causative_agent") == "has causative agent"
    assert prompts.relation_label("part of") == "part of"


# ---------------------------------------------------------------------------------------
# Facts: one row per head, sorted and capped

def _relations(rows: list[tuple[str, str, str | None]]) -> pa.Table:
    return pa.table({"head_id": [r[0] for r in rows], "relation": [r[1] for r in rows],
                     "tail_name": [r[2] for r in rows]})


def test_facts_put_is_a_first_then_relations_by_name_each_capped():
    rows = [
        ("H:2", "is_a", "Disease"),
        ("H:1", "has_part", "zeta"),
        ("H:1", "is_a", "beta parent"),
        ("H:1", "finding_site", "Kidney"),
        ("H:1", "is_a", "Alpha parent"),
        ("H:1", "associated_with", "gamma"),
        ("H:1", "is_a", "delta parent"),
        ("H:1", "is_a", "Charlie parent"),
        ("H:1", "finding_site", "renal pelvis"),
        ("H:1", "finding_site", "Bladder"),
        ("H:1", "finding_site", "Kidney"),           # the same target twice: once
        ("H:1", "associated_with", None),            # no name: not a fact
        ("H:3", "finding_site", None),               # a head without any named target
        ("H:3", "is_a", ""),
    ]
    facts = prompts.collect_facts(_relations(rows), max_parents=3, max_relations=2,
                                  max_targets=2)
    assert facts.schema == prompts.FACTS_SCHEMA
    assert facts.to_pylist() == [
        # is_a first (3 of its 4 parents, case-insensitive order), then the first 2 other
        # relations by name (has_part is the third: dropped), 2 targets each.
        {"head_id": "H:1", "relations": ["is_a", "associated_with", "finding_site"],
         "targets": ["Alpha parent; beta parent; Charlie parent", "gamma",
                     "Bladder; Kidney"]},
        {"head_id": "H:2", "relations": ["is_a"], "targets": ["Disease"]},
    ]


def test_the_relation_cap_does_not_count_is_a():
    rows = [("H", "b_rel", "B"), ("H", "a_rel", "A"), ("H", "c_rel", "C")]
    without_parents = prompts.collect_facts(_relations(rows), max_parents=3, max_relations=2,
                                            max_targets=3)
    assert without_parents.to_pylist() == [
        {"head_id": "H", "relations": ["a_rel", "b_rel"], "targets": ["A", "B"]}]
    with_parent = prompts.collect_facts(_relations([*rows, ("H", "is_a", "P")]),
                                        max_parents=3, max_relations=2, max_targets=3)
    assert with_parent.to_pylist()[0]["relations"] == ["is_a", "a_rel", "b_rel"]
    only_parents = prompts.collect_facts(_relations([*rows, ("H", "is_a", "P")]),
                                         max_parents=3, max_relations=0, max_targets=3)
    assert only_parents.to_pylist() == [{"head_id": "H", "relations": ["is_a"],
                                         "targets": ["P"]}]


# ---------------------------------------------------------------------------------------
# The prompt of a concept

def _synonym(text: str, kind: str, language: str = "en") -> dict:
    return {"text": text, "type": kind, "language": language, "source": "T"}


def _concept(concept_id: str, name: str, synonyms=None, definitions=None,
             semantic_types=None) -> dict:
    return {"concept_id": concept_id, "preferred_name": name, "preferred_name_language": "en",
            "synonyms": synonyms, "definitions": definitions,
            "semantic_types": semantic_types or [], "source_vocabularies": ["T"]}


CKD = _concept(
    "C:1", "Chronic kidney disease",
    synonyms=[_synonym("CKD", "abbreviation"), _synonym("Kidney disease chronic", "exact"),
              _synonym("chronic renal disease", "exact"), _synonym("CRD", "abbreviation"),
              _synonym("CKD", "exact"),                         # a repeat: once
              _synonym("renal disorder", "broad"),              # not a name of the concept
              _synonym("Enfermedad renal crónica", "other_language", "es")],
    semantic_types=["Disease or Syndrome", "Abnormality"])
BARE = _concept("C:2", "Enuresis", definitions=[{"text": "Involuntary urination.",
                                                 "source": "T"}])


def _with_facts(concepts: list[dict], relations: list, targets: list) -> pa.Table:
    table = pa.Table.from_pylist(concepts, schema=CONCEPT_SCHEMA)
    return table.append_column("relations", pa.array(relations, pa.list_(pa.string()))) \
        .append_column("targets", pa.array(targets, pa.list_(pa.string())))


def test_user_prompt_of_a_concept_with_synonyms_types_and_relations():
    cfg = DefinitionsConfig()
    batch = _with_facts([CKD, BARE],
                        relations=[["is_a", "finding_site"], None],  # left outer join: null
                        targets=[["Kidney disease", "Kidney; Renal pelvis"], None])
    rows = prompts.build_prompts(batch, cfg)
    assert rows.schema == prompts.PROMPT_SCHEMA
    ckd, bare = rows.to_pylist()
    # Exact, abbreviation and fully specified names, de-duplicated, case-insensitive order,
    # max_synonyms (3) of them; semantic types sorted; one line per relation.
    assert ckd["user_prompt"] == (
        'Write a definition of the biomedical concept "Chronic kidney disease" in one or two '
        "sentences (about 40 to 60 words). Facts from a knowledge graph:\n"
        "- also called: chronic renal disease; CKD; CRD\n"
        "- semantic type: Abnormality; Disease or Syndrome\n"
        "- is a kind of: Kidney disease\n"
        "- finding site: Kidney; Renal pelvis\n"
        "Answer with the definition only.")
    assert ckd["concept_terms"] == ["Chronic kidney disease", "chronic renal disease", "CKD",
                                    "CRD", "Kidney disease", "Kidney", "Renal pelvis"]
    assert (ckd["concept_id"], ckd["preferred_name"], ckd["has_definition"]) == (
        "C:1", "Chronic kidney disease", False)
    assert ckd["system_prompt"] == cfg.system_prompt
    assert bare["user_prompt"] == (
        'Write a definition of the biomedical concept "Enuresis" in one or two sentences '
        "(about 40 to 60 words). Facts from a knowledge graph:\n"
        "- (no other facts known)\n"
        "Answer with the definition only.")
    assert (bare["concept_terms"], bare["has_definition"]) == (["Enuresis"], True)


def test_prompt_follows_the_configured_template_and_synonym_cap():
    cfg = DefinitionsConfig(max_synonyms=1, system_prompt="S", user_prompt="[{name}]\n{facts}")
    # Concept rows without the facts columns (with_facts adds them): no relation lines.
    batch = pa.Table.from_pylist([CKD], schema=CONCEPT_SCHEMA)
    row = prompts.build_prompts(batch, cfg).to_pylist()[0]
    assert row["user_prompt"] == ("[Chronic kidney disease]\n"
                                  "- also called: chronic renal disease\n"
                                  "- semantic type: Abnormality; Disease or Syndrome")
    assert row["system_prompt"] == "S"
    assert row["concept_terms"] == ["Chronic kidney disease", "chronic renal disease"]


class _Rows:
    """The one Ray Dataset call candidate_concepts makes, on a local table."""

    def __init__(self, table: pa.Table):
        self.table = table

    def map_batches(self, fn, batch_format):
        assert batch_format == "pyarrow"
        return _Rows(fn(self.table))


def test_candidates_are_the_concepts_without_a_human_definition_when_only_missing():
    concepts = _Rows(pa.Table.from_pylist(
        [CKD, BARE, _concept("C:3", "Acne", definitions=[])], schema=CONCEPT_SCHEMA))
    missing = prompts.candidate_concepts(concepts, DefinitionsConfig(only_missing=True))
    assert missing.table["concept_id"].to_pylist() == ["C:1", "C:3"]
    assert prompts.candidate_concepts(concepts, DefinitionsConfig(only_missing=False)) \
        is concepts


# ---------------------------------------------------------------------------------------
# The capped selection's order

def test_selection_key_counts_english_texts_and_draws_ties_by_seed():
    table = pa.Table.from_pylist([
        CKD,   # 1 + 6 English synonyms (any type, repeats too); the Spanish one not counted
        BARE,  # a human definition: 1 + 1 text
        _concept("C:3", "Acne"),
        _concept("C:4", "Fever", synonyms=[_synonym("Pyrexia", "exact")]),
    ], schema=CONCEPT_SCHEMA)
    keyed = selection.selection_key(table, seed=7)
    assert keyed.schema.names == [*CONCEPT_SCHEMA.names, "has_human_definition", "texts",
                                  "draw"]
    assert keyed["has_human_definition"].to_pylist() == [False, True, False, False]
    assert keyed["texts"].to_pylist() == [7, 2, 1, 2]
    assert keyed["draw"].to_pylist() == [draw(7, c) for c in ("C:1", "C:2", "C:3", "C:4")]
    # No human definition first, then fewest texts: Acne, Fever, CKD; Enuresis last.
    order = keyed.sort_by([(k, "ascending") for k in selection.ORDER])["concept_id"]
    assert order.to_pylist() == ["C:3", "C:4", "C:1", "C:2"]


def test_selection_ties_are_ordered_by_the_seeded_draw():
    """Five concepts of one text each, none defined: the order is that of draw(seed, id);
    seed 0: C:14 0.222, C:11 0.328, C:12 0.373, C:13 0.523, C:10 0.972; seed 1: C:11 0.195,
    C:12 0.490, C:13 0.562, C:10 0.633, C:14 0.648."""
    table = pa.Table.from_pylist([_concept(f"C:{i}", f"name {i}") for i in range(10, 15)],
                                 schema=CONCEPT_SCHEMA)
    for seed, expected in ((0, ["C:14", "C:11", "C:12", "C:13", "C:10"]),
                           (1, ["C:11", "C:12", "C:13", "C:10", "C:14"])):
        keyed = selection.selection_key(table, seed)
        order = keyed.sort_by([(k, "ascending") for k in selection.ORDER])["concept_id"]
        assert order.to_pylist() == expected
