"""The one Arrow schema every KG reader produces (written as Parquet in the run directory)."""

import pyarrow as pa

# Synonym types, normalised across sources (OBO scopes, UMLS TTY/LAT, SNOMED CT type ids).
SYNONYM_TYPES = ("exact", "related", "broad", "narrow", "abbreviation", "fully_specified",
                 "other_language", "other")

SYNONYM = pa.struct([
    ("text", pa.string()),
    ("type", pa.string()),       # one of SYNONYM_TYPES
    ("language", pa.string()),   # ISO 639-1 where known ("en"), else the source's code
    ("source", pa.string()),     # vocabulary the name comes from (UMLS SAB, "SNOMEDCT", "MONDO")
])

DEFINITION = pa.struct([
    ("text", pa.string()),
    ("source", pa.string()),     # who wrote it: a vocabulary (MSH, NCI, HPO, ...); LLM ones later
])

CONCEPT_SCHEMA = pa.schema([
    ("concept_id", pa.string()),
    ("preferred_name", pa.string()),
    ("preferred_name_language", pa.string()),   # as SYNONYM.language ("en" for English)
    ("synonyms", pa.list_(SYNONYM)),            # excludes the preferred name itself
    ("definitions", pa.list_(DEFINITION)),
    ("semantic_types", pa.list_(pa.string())),  # UMLS STY, SNOMED CT semantic tag, OBO namespace
    ("source_vocabularies", pa.list_(pa.string())),
])

RELATION_SCHEMA = pa.schema([
    ("head_id", pa.string()),
    ("relation", pa.string()),   # "is_a" for hierarchy; attribute names in snake_case
    ("tail_id", pa.string()),
    ("source", pa.string()),
])

IS_A = "is_a"

# UMLS language codes (LAT) -> ISO 639-1, for the languages the paper's multilingual model
# covers and a few more; other codes are kept lower-cased.
UMLS_LANGUAGES = {"ENG": "en", "SPA": "es", "FRE": "fr", "GER": "de", "DUT": "nl",
                  "DAN": "da", "SWE": "sv", "ITA": "it", "POR": "pt", "NOR": "no",
                  "FIN": "fi", "CZE": "cs", "POL": "pl", "RUS": "ru", "JPN": "ja",
                  "CHI": "zh", "KOR": "ko", "TUR": "tr"}


def iso_language(code: str) -> str:
    """A UMLS LAT code ("SPA") or an ISO 639-1 code ("es") -> the ISO code the schema uses."""
    return UMLS_LANGUAGES.get(code, code.lower())


def iso_languages(codes: list[str]) -> list[str]:
    """``kg.languages`` as ISO codes (English when it is empty, as the UMLS reader reads it)."""
    return sorted({iso_language(code) for code in codes or ["en"]})
