"""The ontologies bundled in cellxgene-ontology-guide: MONDO (the embedded default's knowledge
graph), UBERON, CL and EFO (``kg.format`` mondo, uberon, cl, efo).

The package ships each ontology as a JSON map ``term id -> {label, description, synonyms,
ancestors: {id: distance}, deprecated}``; parents are the ancestors at distance 1. Its
synonyms carry no scope: they are typed "exact", or "abbreviation" when they look like one.
"""

from __future__ import annotations

import re

import pyarrow as pa

from biolord_ray.kg.errors import KGFormatError
from biolord_ray.kg.schema import CONCEPT_SCHEMA, IS_A, RELATION_SCHEMA

ACRONYM = re.compile(r"^[A-Z0-9][A-Z0-9-]{1,9}$")


def load_bundled(ontology: str = "MONDO") -> tuple[dict, str]:
    """The ontology's term map and version, through the package's own schema API."""
    try:
        from cellxgene_ontology_guide.supported_versions import CXGSchema
    except ImportError as err:
        raise KGFormatError("cellxgene-ontology-guide", "the bundled MONDO needs this package "
                            "(pip install 'biolord-ray[ontologies]')") from err
    schema = CXGSchema()
    return schema.ontology(ontology), schema.supported_ontologies[ontology]["version"]


def read_mondo(terms: dict, source: str = "MONDO") -> tuple[pa.Table, pa.Table, dict[str, int]]:
    counts = {"obsolete_terms": 0}
    concepts, relations = [], []
    for concept_id, term in terms.items():
        if term.get("deprecated"):
            counts["obsolete_terms"] += 1
            continue
        name = term["label"]
        concepts.append({
            "concept_id": concept_id,
            "preferred_name": name,
            "preferred_name_language": "en",
            "synonyms": [{"text": s, "type": "abbreviation" if ACRONYM.match(s) else "exact",
                          "language": "en", "source": source}
                         for s in dict.fromkeys(term.get("synonyms", [])) if s != name],
            "definitions": [{"text": term["description"], "source": source}]
            if term.get("description") else [],
            "semantic_types": [],
            "source_vocabularies": [source],
            "xrefs": [],  # the package's term maps carry no cross-references
        })
        relations += [{"head_id": concept_id, "relation": IS_A, "tail_id": parent,
                       "source": source}
                      for parent, distance in sorted(term.get("ancestors", {}).items())
                      if distance == 1]
    return (pa.Table.from_pylist(concepts, schema=CONCEPT_SCHEMA),
            pa.Table.from_pylist(relations, schema=RELATION_SCHEMA), counts)
