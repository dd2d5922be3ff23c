"""A synthetic SNOMED CT RF2 snapshot of any size, in the real file layout and columns.

Per concept, as in the International Edition: one FSN with a semantic tag and two synonyms
(all in the US English language refset, the first synonym preferred), a text definition for
one concept in ten, and three active relationships (an is-a to an earlier concept and two
attributes). Ids are plain integers (no Verhoeff check digit: the reader does not check).
Licensed SNOMED CT data never enters the repository; this is what benchmarks read instead.

    .venv/bin/python benchmarks/synthetic_snomed.py 5000 /tmp/snomed_5000
"""

from __future__ import annotations

import random
import sys
from pathlib import Path

DATE = "20250101"
MODULE = "900000000000207008"
US_ENGLISH = "900000000000509007"
FSN, SYNONYM, DEFINITION = "900000000000003001", "900000000000013009", "900000000000550004"
PREFERRED, ACCEPTABLE = "900000000000548007", "900000000000549004"
IS_A, STATED = "116680003", "900000000000011006"
ATTRIBUTES = ["363698007", "116676008", "246075003", "370135005"]
TAGS = ["disorder", "finding", "procedure", "body structure", "substance"]
WORDS = ["acute", "chronic", "renal", "hepatic", "cardiac", "pulmonary", "lesion", "failure",
         "infection", "neoplasm", "syndrome", "injury", "structure", "disease", "deficiency"]


def write_release(root: Path, concepts: int, seed: int = 0) -> Path:
    """Write the snapshot under ``root`` (created); returns ``root``."""
    rng = random.Random(seed)
    terminology = root / "Snapshot" / "Terminology"
    language = root / "Snapshot" / "Refset" / "Language"
    terminology.mkdir(parents=True, exist_ok=True)
    language.mkdir(parents=True, exist_ok=True)
    files = {
        "concept": (terminology / f"sct2_Concept_Snapshot_INT_{DATE}.txt",
                    "id effectiveTime active moduleId definitionStatusId"),
        "description": (terminology / f"sct2_Description_Snapshot-en_INT_{DATE}.txt",
                        "id effectiveTime active moduleId conceptId languageCode typeId term "
                        "caseSignificanceId"),
        "definition": (terminology / f"sct2_TextDefinition_Snapshot-en_INT_{DATE}.txt",
                       "id effectiveTime active moduleId conceptId languageCode typeId term "
                       "caseSignificanceId"),
        "relationship": (terminology / f"sct2_Relationship_Snapshot_INT_{DATE}.txt",
                         "id effectiveTime active moduleId sourceId destinationId "
                         "relationshipGroup typeId characteristicTypeId modifierId"),
        "language": (language / f"der2_cRefset_LanguageSnapshot-en_INT_{DATE}.txt",
                     "id effectiveTime active moduleId refsetId referencedComponentId "
                     "acceptabilityId"),
    }
    handles = {k: open(path, "w", encoding="utf-8") for k, (path, _) in files.items()}
    try:
        for key, (_, header) in files.items():
            handles[key].write("\t".join(header.split()) + "\n")
        next_id = iter(range(10_000_000, 10**12))
        ids = [str(100_000 + i) for i in range(concepts)]
        for i, concept in enumerate(ids):
            handles["concept"].write(f"{concept}\t{DATE}\t1\t{MODULE}\t900000000000074008\n")
            name = " ".join(rng.sample(WORDS, 3)) + f" {i}"
            terms = [(FSN, f"{name.capitalize()} ({rng.choice(TAGS)})", ACCEPTABLE),
                     (SYNONYM, name.capitalize(), PREFERRED),
                     (SYNONYM, f"{name} {rng.choice(WORDS)}", ACCEPTABLE)]
            for type_id, term, acceptability in terms:
                description = str(next(next_id))
                handles["description"].write(f"{description}\t{DATE}\t1\t{MODULE}\t{concept}\t"
                                             f"en\t{type_id}\t{term}\t900000000000448009\n")
                handles["language"].write(f"{next(next_id)}\t{DATE}\t1\t{MODULE}\t{US_ENGLISH}"
                                          f"\t{description}\t{acceptability}\n")
            if i % 10 == 0:
                handles["definition"].write(
                    f"{next(next_id)}\t{DATE}\t1\t{MODULE}\t{concept}\ten\t{DEFINITION}\t"
                    f"A {name} that is {' '.join(rng.sample(WORDS, 4))}.\t900000000000448009\n")
            targets = [(IS_A, ids[rng.randrange(i)] if i else None)] + [
                (rng.choice(ATTRIBUTES), ids[rng.randrange(concepts)]) for _ in range(2)]
            for type_id, target in targets:
                if target is not None:
                    handles["relationship"].write(
                        f"{next(next_id)}\t{DATE}\t1\t{MODULE}\t{concept}\t{target}\t0\t"
                        f"{type_id}\t{STATED}\t900000000000451002\n")
    finally:
        for handle in handles.values():
            handle.close()
    return root


if __name__ == "__main__":
    write_release(Path(sys.argv[2]), int(sys.argv[1]))
