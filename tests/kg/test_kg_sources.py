"""Several KG sources in one run: namespaced ids, and concepts merged on cross-references."""

from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from biolord_ray.config import ConfigError, load_config
from biolord_ray.kg import ingest, merge, umls
from biolord_ray.kg.schema import CONCEPT_SCHEMA
from biolord_ray.run_dir import RunDir

MONDO_EXCERPT = Path(__file__).parents[1] / "fixtures" / "obo" / "mondo_excerpt.obo"


def _ingest(tmp_path, sources: str, *more: str):
    cfg = load_config(None, [f"kg.sources={sources}", "kg.max_concepts=null",
                             "kg.shuffle_partitions=2", f"run_dir={tmp_path}", *more])
    run_dir = RunDir(cfg.run_dir)
    record = ingest.run(cfg, run_dir)
    return record, ingest.read_concepts(run_dir), ingest.read_relations(run_dir), run_dir


def test_two_bundled_ontologies_in_one_kg(ray_local, tmp_path):
    record, concepts, relations, _ = _ingest(
        tmp_path, "[{format: mondo, max_concepts: 120}, {format: hpo, max_concepts: 120}]")
    ids = concepts["concept_id"].to_pylist()
    assert len(ids) == len(set(ids)) == 240
    assert record["counts"]["concepts_by_source"] == {"mondo": 120, "hpo": 120}
    assert {i.split(":", 1)[0] for i in ids} == {"mondo", "hpo"}
    assert "mondo:MONDO:0000001" in ids and "hpo:HP:0000001" in ids
    # Every relation joins two kept concepts, within one source (nothing merged).
    assert relations.num_rows > 50
    assert set(relations["head_id"].to_pylist()) | set(relations["tail_id"].to_pylist()) <= \
        set(ids)
    assert all(h.split(":")[0] == t.split(":")[0] for h, t in
               zip(relations["head_id"].to_pylist(), relations["tail_id"].to_pylist(),
                   strict=True))
    assert record["counts"]["relations_outside_slice"] > 0


def test_concepts_that_cite_the_same_umls_cui_are_merged(ray_local, tmp_path):
    """An OBO excerpt of MONDO (xref: UMLS:...) with the whole bundled HPO, merged on UMLS."""
    record, concepts, relations, run_dir = _ingest(
        tmp_path, f"[{{name: mondo, format: obo, path: {MONDO_EXCERPT}}}, {{format: hpo}}]",
        "kg.merge_on=[UMLS]")
    counts = record["counts"]
    # Four CUIs are cited once on each side. Hypospadias' CUI is held by two HPO terms
    # (ambiguous); epilepsy and brain disorder both lead to HPO's Seizure (a conflict).
    assert (counts["merged_concepts"], counts["merge_groups"], counts["merge_conflicts"],
            counts["ambiguous_merge_keys"]) == (4, 4, 1, 1)
    merges = pq.read_table(run_dir.output("ingest_kg", "merges"), filesystem=run_dir.fs)
    assert sorted(zip(merges["concept_id"].to_pylist(), merges["merged_id"].to_pylist(),
                      strict=True)) == [
        ("mondo:MONDO:0004979", "hpo:HP:0002099"), ("mondo:MONDO:0005015", "hpo:HP:0000819"),
        ("mondo:MONDO:0005044", "hpo:HP:0000822"), ("mondo:MONDO:0005148", "hpo:HP:0005978")]
    ids = set(concepts["concept_id"].to_pylist())
    assert counts["concepts_by_source"] == {"mondo": 7, "hpo": len(ids) - 7}
    assert not ids & set(merges["merged_id"].to_pylist())
    assert {"mondo:MONDO:0005027", "mondo:MONDO:0005560", "hpo:HP:0001250",
            "mondo:MONDO:0005345", "hpo:HP:0000047", "hpo:HP:0003244"} <= ids

    t2dm = concepts.filter(pc.equal(concepts["concept_id"], "mondo:MONDO:0005148")).to_pylist()[0]
    assert t2dm["preferred_name"] == "type 2 diabetes mellitus"
    names = {(s["text"], s["source"]) for s in t2dm["synonyms"]}
    assert {("Type II diabetes mellitus", "HP"), ("T2DM", "MONDO")} <= names
    assert {d["source"] for d in t2dm["definitions"]} == {"MONDO", "HP"}
    assert t2dm["source_vocabularies"] == ["HP", "MONDO"]
    assert {"UMLS:C0011860", "SNOMEDCT:44054006", "hpo:HP:0005978"} <= set(t2dm["xrefs"])

    # Relations: every endpoint is a kept concept; HPO's relations now use the kept ids.
    heads, tails = relations["head_id"].to_pylist(), relations["tail_id"].to_pylist()
    assert set(heads) | set(tails) <= ids
    edges = set(zip(heads, relations["relation"].to_pylist(), tails, strict=True))
    assert ("mondo:MONDO:0005148", "is_a", "mondo:MONDO:0005015") in edges
    # HPO: Type II diabetes mellitus is_a Diabetes mellitus (both merged) -> one edge; HPO's
    # children of Diabetes mellitus hang under the merged concept.
    assert sum(1 for h, _, t in edges if h == "mondo:MONDO:0005148"
               and t == "mondo:MONDO:0005015") == 1
    assert any(h.startswith("hpo:") and t == "mondo:MONDO:0005015" for h, _, t in edges)
    assert ("mondo:MONDO:0005148", "is_a", "hpo:HP:0000819") not in edges


def test_merge_groups_keep_the_earliest_source_and_refuse_conflicts():
    order = {"a": 0, "b": 1, "c": 2}
    into, conflicts = merge.merge_groups(
        [("a:1", "b:1"), ("b:1", "c:1"), ("a:2", "b:2"), ("a:3", "b:2")], order)
    assert into == {"a:1": "a:1", "b:1": "a:1", "c:1": "a:1"}
    assert conflicts == 1  # a:2 and a:3 would become one through b:2


def test_concept_keys_read_own_ids_and_xrefs():
    batch = pa.Table.from_pylist([
        {"concept_id": "umls:C0011849", "xrefs": ["SNOMEDCT:73211009"]},
        {"concept_id": "hpo:HP:0000819", "xrefs": ["UMLS:C0011849", "MESH:D003920"]},
        {"concept_id": "sct:73211009", "xrefs": None},
    ])
    keys = merge.concept_keys(batch, {"umls": "umls", "hpo": "hpo", "sct": "snomed"},
                              ["umls", "SNOMEDCT"])
    assert sorted(zip(keys["key"].to_pylist(), keys["concept_id"].to_pylist(), strict=True)) \
        == [("SNOMEDCT:73211009", "sct:73211009"), ("SNOMEDCT:73211009", "umls:C0011849"),
            ("UMLS:C0011849", "hpo:HP:0000819"), ("UMLS:C0011849", "umls:C0011849")]


def test_umls_source_codes_become_xrefs_for_the_merge_namespaces():
    row = dict.fromkeys(umls.MRCONSO, "")
    rows = [{**row, "CUI": "C0011849", "LAT": "ENG", "TS": "P", "STT": "PF", "ISPREF": "Y",
             "SAB": sab, "TTY": "PT", "CODE": code, "STR": "Diabetes mellitus",
             "SUPPRESS": "N"} for sab, code in
            [("SNOMEDCT_US", "73211009"), ("MSH", "D003920"), ("HPO", "HP:0000819"),
             ("MTH", "NOCODE")]]
    facts = umls.names_to_facts(pa.Table.from_pylist(rows), ["ENG"], [], False,
                                xref_namespaces=["SNOMEDCT", "HP"])
    xrefs = facts.filter(pc.equal(facts["kind"], "xref"))
    assert sorted(xrefs["text"].to_pylist()) == ["HP:0000819", "SNOMEDCT:73211009"]
    assert facts.filter(pc.equal(facts["kind"], "name")).num_rows == 4


def test_merged_row_unions_both_sides():
    rows = pa.Table.from_pylist([
        {"concept_id": "hpo:HP:1", "preferred_name": "Asthma", "preferred_name_language": "en",
         "synonyms": [], "definitions": [{"text": "HPO def", "source": "HP"}],
         "semantic_types": [], "source_vocabularies": ["HP"], "xrefs": ["UMLS:C1"]},
        {"concept_id": "mondo:MONDO:1", "preferred_name": "asthma",
         "preferred_name_language": "en",
         "synonyms": [{"text": "Asthma", "type": "exact", "language": "en", "source": "MONDO"}],
         "definitions": [{"text": "MONDO def", "source": "MONDO"}],
         "semantic_types": [], "source_vocabularies": ["MONDO"], "xrefs": ["UMLS:C1"]},
    ], schema=CONCEPT_SCHEMA).append_column("_group", pa.array(["mondo:MONDO:1"] * 2))
    merged = merge.merge_rows(rows, {"mondo": 0, "hpo": 1}).to_pylist()[0]
    assert merged["concept_id"] == "mondo:MONDO:1" and merged["preferred_name"] == "asthma"
    assert merged["synonyms"] == [{"text": "Asthma", "type": "exact", "language": "en",
                                   "source": "MONDO"}]  # HPO's name is the same string
    assert [d["text"] for d in merged["definitions"]] == ["MONDO def", "HPO def"]
    assert merged["xrefs"] == ["UMLS:C1", "hpo:HP:1"]


@pytest.mark.parametrize("overrides, message", [
    (["kg.sources=[{format: mondo}, {format: mondo}]"], "kg.sources[1].name"),
    (["kg.sources=[{format: mondo}, {format: owl}]"], "kg.sources[1].format"),
    (["kg.sources=[{format: mondo}, {format: hpo, max_concepts: -1}]"],
     "kg.sources[1].max_concepts"),
    (["kg.sources=[{format: mondo}, {format: cl}]", "kg.merge_on=[UMLS]"],
     "none of the sources has cross-references"),
    (["kg.merge_on=[UMLS]"], "at least two sources"),
    (["kg.sources=[{format: mondo}, {format: hpo}]", "kg.format=hpo"], "kg.format"),
])
def test_bad_source_lists_fail_before_ray_starts(overrides, message):
    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace("]", r"\]")):
        load_config(None, overrides)
