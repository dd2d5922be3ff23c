"""Training pairs: hand-made concept rows, and the stage on the real bundled HPO slice."""

import copy

import pyarrow as pa
import pyarrow.parquet as pq

from biolord_ray import keys
from biolord_ray.evaluation import eval_sets
from biolord_ray.kg.schema import CONCEPT_SCHEMA
from biolord_ray.training import pairs


def _concept_rows(generated=None, relations=None, targets=None):
    table = pa.Table.from_pylist([{
        "concept_id": "C1", "preferred_name": "Nocturnal enuresis",
        "synonyms": [
            {"text": "bedwetting", "type": "exact", "language": "en", "source": "HP"},
            {"text": "Nocturnal enuresis", "type": "exact", "language": "en", "source": "HP"},
            {"text": "enuresis", "type": "broad", "language": "en", "source": "HP"}],
        "definitions": [{"text": "Urination during sleep.", "source": "HP"},
                        {"text": "Urination during sleep.", "source": "MSH"}],
        "semantic_types": [], "source_vocabularies": ["HP"]}], schema=CONCEPT_SCHEMA)
    table = table.append_column("relations", pa.array([relations], pa.list_(pa.string())))
    table = table.append_column("targets", pa.array([targets], pa.list_(pa.string())))
    return table.append_column("generated", pa.array([generated], pa.string()))


def test_held_out_texts_are_dropped_for_their_own_concept_only():
    rows = [("C1", "Enuresis, nocturnal", "Urination during sleep."),
            ("C1", "bedwetting", "Urination during sleep."),
            ("C1", "bedwetting", "Involuntary urination at night."),
            ("C2", "Nocturnal enuresis", "Another definition.")]
    batch = pa.table({"concept_id": [r[0] for r in rows], "anchor": [r[1] for r in rows],
                      "positive": [r[2] for r in rows], "kind": ["definition"] * 4,
                      "source": ["HP"] * 4,
                      "anchor_key": [keys.normalise(r[1]) for r in rows]},
                     schema=pairs.KEYED_PAIR_SCHEMA)
    held = pa.table({"concept_id": ["C1", "C1"],
                     "text": [keys.normalise("nocturnal ENURESIS"), "Urination during sleep."],
                     "column": ["anchor_key", "positive"]}, schema=pairs.HELD_OUT_SCHEMA)
    kept = pairs.without_held_out(batch, held)
    # C1's held-out name in another case and word order, and its held-out definition, go;
    # the same name of C2 stays.
    assert list(zip(kept["concept_id"].to_pylist(), kept["anchor"].to_pylist(),
                    strict=True)) == [("C1", "bedwetting"), ("C2", "Nocturnal enuresis")]


def test_pairs_from_names_definitions_and_descriptions():
    batch = _concept_rows(generated="Involuntary urination at night while asleep.",
                          relations=["is_a", "has_finding_site"],
                          targets=["Enuresis; Sleep disorder", "Bladder"])
    rows = pairs.make_pairs(batch, max_per_concept=100, seed=0,
                            use_descriptions=True).to_pylist()
    got = {(r["anchor"], r["positive"], r["kind"], r["source"]) for r in rows}
    description = ("Nocturnal enuresis is a kind of Enuresis, Sleep disorder. "
                   "Nocturnal enuresis has finding site Bladder.")
    assert got == {
        (anchor, positive, kind, source)
        for anchor in ("Nocturnal enuresis", "bedwetting")  # the broad synonym is no name
        for positive, kind, source in (
            # The same definition text from two vocabularies is one pair.
            ("Urination during sleep.", "definition", "MSH"),
            ("Involuntary urination at night while asleep.", "definition", "llm"),
            (description, "description", "kg"))}
    assert len(rows) == len(got) == 6
    assert {r["anchor_key"] for r in rows} == {"enuresis nocturnal", "bedwetting"}


def test_cap_per_concept_is_a_seeded_choice():
    batch = _concept_rows(generated="Involuntary urination at night while asleep.")
    first = pairs.make_pairs(batch, max_per_concept=3, seed=1, use_descriptions=True)
    again = pairs.make_pairs(batch, max_per_concept=3, seed=1, use_descriptions=True)
    other = pairs.make_pairs(batch, max_per_concept=3, seed=2, use_descriptions=True)
    assert first.num_rows == 3 and first.equals(again)
    all_pairs = pairs.make_pairs(batch, max_per_concept=100, seed=1, use_descriptions=True)
    assert all_pairs.num_rows == 4  # 2 names x 2 definitions (no relations: no description)
    assert {tuple(r.values()) for r in other.to_pylist()} <= \
        {tuple(r.values()) for r in all_pairs.to_pylist()}


def test_stage_splits_by_concept_and_keeps_held_out_texts_out(hpo_run):
    cfg, run_dir, _ = hpo_run
    cfg = copy.deepcopy(cfg)  # the session's config, shared with other tests
    eval_sets.run(cfg, run_dir)
    cfg.pairs.validation_fraction = 0.2
    record = pairs.run(cfg, run_dir)
    train = pq.read_table(run_dir.output(pairs.STAGE, "train")).to_pylist()
    validation = pq.read_table(run_dir.output(pairs.STAGE, "validation")).to_pylist()
    train_ids = {r["concept_id"] for r in train}
    validation_ids = {r["concept_id"] for r in validation}
    assert not train_ids & validation_ids
    assert record["counts"]["train_pairs"] == len(train) > 500
    assert record["counts"]["validation_concepts"] == len(validation_ids) > 20
    everything = train + validation
    triples = [(r["concept_id"], r["anchor"], r["positive"]) for r in everything]
    assert len(set(triples)) == len(triples)
    per_concept = {}
    for r in everything:
        per_concept[r["concept_id"]] = per_concept.get(r["concept_id"], 0) + 1
    assert max(per_concept.values()) <= cfg.pairs.max_pairs_per_concept
    assert {r["source"] for r in everything} == {"HP", "kg"}
    assert any(" is a kind of " in r["positive"] for r in everything if r["kind"] ==
               "description")

    names = pq.read_table(run_dir.output(eval_sets.STAGE, "names")).to_pylist()
    held_names = {(n["concept_id"], keys.normalise(n["text"])) for n in names
                  if n["held_out"]}
    held_definitions = {(d["concept_id"], d["text"]) for d in pq.read_table(
        run_dir.output(eval_sets.STAGE, "definitions")).to_pylist()}
    assert held_names and held_definitions
    assert not {(r["concept_id"], keys.normalise(r["anchor"])) for r in everything} & \
        held_names
    assert not {(r["concept_id"], r["positive"]) for r in everything} & held_definitions
    # The training split is shuffled, not in concept order.
    order = [r["concept_id"] for r in train]
    assert order != sorted(order)
