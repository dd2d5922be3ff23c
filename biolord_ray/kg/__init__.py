"""KG ingestion: readers for UMLS RRF, SNOMED CT RF2, OBO and the bundled MONDO/HPO, all
producing the Arrow schema in :mod:`biolord_ray.kg.schema`."""
