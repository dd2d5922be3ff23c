"""A synthetic UMLS release, in the real RRF formats and in UMLS's proportions, for measuring
the platform at UMLS scale without licensed data.

``write_release(meta_dir, concepts, seed)`` writes the four files the UMLS reader takes:

* ``MRCONSO.RRF``: 3-5 atoms per concept (about 4; UMLS 2024AA: 16.9M atoms for 3.3M concepts,
  about 5, of which English about 3.4), English first and preferred, the rest English,
  Spanish or French from ten English and five foreign sources, with UMLS's term types,
  suppressible and obsolete atoms (6%) and source codes in each source's style;
* ``MRDEF.RRF``: definitions for 11% of the concepts, 1.3 per defined concept (2024AA: about
  450k definitions of 370k concepts), 2% suppressible;
* ``MRSTY.RRF``: one semantic type per concept, a second for 10% (2024AA: 3.6M rows);
* ``MRREL.RRF``: 12 rows per concept, each relation stated from both sides as UMLS does:
  the hierarchy (PAR/CHD: 1-2 parents among earlier concepts, 3 rows per concept), RO with
  a RELA (3), SIB (3), RB/RN (1), SY (1), RQ (0.5), AQ/QB (0.5). A full 2024AA MRREL has
  about 60M rows for 3.3M concepts (18 per concept); MRREL's share of the work grows with it.

Texts are composed from small vocabularies (conditions, anatomy, modifiers) so that names are
realistic in length and shape, not in meaning. Generation is vectorised (pyarrow string
kernels over numpy draws) and chunked: 1M concepts take about a minute and write about 1.3 GB.

Usage::

    .venv/bin/python benchmarks/synthetic_umls.py --concepts 200000 --out /tmp/umls-200k
"""

from __future__ import annotations

import argparse
import json
import os
import random
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

# In the cached releases' names: bump when the generated rows change.
RELEASE_VERSION = 1

# --------------------------------------------------------------------------------------------
# MRCONSO generator
# --------------------------------------------------------------------------------------------

# (English, Spanish, French)
CONDITIONS = [
    ("disease", "enfermedad", "maladie"), ("disorder", "trastorno", "trouble"),
    ("neoplasm", "neoplasia", "néoplasme"), ("carcinoma", "carcinoma", "carcinome"),
    ("inflammation", "inflamación", "inflammation"), ("infection", "infección", "infection"),
    ("fracture", "fractura", "fracture"), ("injury", "lesión", "lésion"),
    ("hemorrhage", "hemorragia", "hémorragie"), ("stenosis", "estenosis", "sténose"),
    ("insufficiency", "insuficiencia", "insuffisance"), ("atrophy", "atrofia", "atrophie"),
    ("hypertrophy", "hipertrofia", "hypertrophie"), ("ulcer", "úlcera", "ulcère"),
    ("abscess", "absceso", "abcès"), ("cyst", "quiste", "kyste"),
    ("malformation", "malformación", "malformation"), ("obstruction", "obstrucción",
                                                       "obstruction"),
    ("dysplasia", "displasia", "dysplasie"), ("necrosis", "necrosis", "nécrose"),
    ("pain", "dolor", "douleur"), ("edema", "edema", "œdème"),
    ("calcification", "calcificación", "calcification"), ("fibrosis", "fibrosis", "fibrose"),
    ("syndrome", "síndrome", "syndrome"), ("tumor", "tumor", "tumeur"),
]
ANATOMY = [
    ("lung", "pulmón", "poumon"), ("liver", "hígado", "foie"), ("kidney", "riñón", "rein"),
    ("heart", "corazón", "cœur"), ("brain", "cerebro", "cerveau"),
    ("stomach", "estómago", "estomac"), ("colon", "colon", "côlon"),
    ("pancreas", "páncreas", "pancréas"), ("thyroid gland", "glándula tiroides",
                                          "glande thyroïde"),
    ("skin", "piel", "peau"), ("bone", "hueso", "os"), ("femur", "fémur", "fémur"),
    ("tibia", "tibia", "tibia"), ("spinal cord", "médula espinal", "moelle épinière"),
    ("aorta", "aorta", "aorte"), ("coronary artery", "arteria coronaria",
                                  "artère coronaire"),
    ("retina", "retina", "rétine"), ("cornea", "córnea", "cornée"),
    ("bladder", "vejiga", "vessie"), ("prostate", "próstata", "prostate"),
    ("ovary", "ovario", "ovaire"), ("uterus", "útero", "utérus"),
    ("esophagus", "esófago", "œsophage"), ("small intestine", "intestino delgado",
                                           "intestin grêle"),
    ("lymph node", "ganglio linfático", "ganglion lymphatique"), ("spleen", "bazo", "rate"),
    ("adrenal gland", "glándula suprarrenal", "glande surrénale"),
    ("mitral valve", "válvula mitral", "valve mitrale"), ("trachea", "tráquea", "trachée"),
    ("gallbladder", "vesícula biliar", "vésicule biliaire"),
]
MODIFIERS = [
    ("chronic", "crónica", "chronique"), ("acute", "aguda", "aiguë"),
    ("congenital", "congénita", "congénitale"), ("malignant", "maligna", "maligne"),
    ("benign", "benigna", "bénigne"), ("primary", "primaria", "primitive"),
    ("secondary", "secundaria", "secondaire"), ("recurrent", "recurrente", "récidivante"),
    ("obstructive", "obstructiva", "obstructive"), ("traumatic", "traumática",
                                                    "traumatique"),
    ("idiopathic", "idiopática", "idiopathique"), ("hereditary", "hereditaria",
                                                   "héréditaire"),
    ("bilateral", "bilateral", "bilatérale"), ("diffuse", "difusa", "diffuse"),
    ("focal", "focal", "focale"), ("severe", "grave", "sévère"),
]
QUALIFIERS = [
    ("", "", ""), ("", "", ""), ("", "", ""), ("", "", ""),
    (", unspecified", ", no especificada", ", sans précision"),
    (", left", ", izquierda", ", gauche"), (", right", ", derecha", ", droite"),
    (" without complication", " sin complicación", " sans complication"),
    (" with hemorrhage", " con hemorragia", " avec hémorragie"),
    (" in pregnancy", " en el embarazo", " au cours de la grossesse"),
    (" of childhood", " de la infancia", " de l'enfance"),
    (" (finding)", " (hallazgo)", " (constatation)"),
    (", stage 2", ", estadio 2", ", stade 2"), (" type 1", " tipo 1", " type 1"),
    (" type 2", " tipo 2", " type 2"), (", initial encounter", ", primer contacto",
                                        ", premier contact"),
]
ENG_SABS = ["MSH", "SNOMEDCT_US", "NCI", "MDR", "ICD10CM", "MTH", "MEDLINEPLUS", "LNC",
            "HPO", "OMIM"]
ENG_SAB_P = [0.18, 0.30, 0.15, 0.10, 0.06, 0.05, 0.03, 0.07, 0.03, 0.03]
SPA_SABS = ["MSHSPA", "SCTSPA", "MDRSPA"]
FRE_SABS = ["MSHFRE", "MDRFRE"]
SABS = ENG_SABS + SPA_SABS + FRE_SABS
# Per SAB: code style (0: MeSH D######, 1: SNOMED number, 2: ICD-10-CM, 3: NCI C#####,
# 4: plain number) and SRL.
SAB_CODE_STYLE = {"MSH": 0, "MSHSPA": 0, "MSHFRE": 0, "SNOMEDCT_US": 1, "SCTSPA": 1,
                  "ICD10CM": 2, "NCI": 3}
SAB_SRL = {"MSH": "0", "SNOMEDCT_US": "9", "NCI": "0", "MDR": "3", "ICD10CM": "4",
           "MTH": "0", "MEDLINEPLUS": "0", "LNC": "0", "HPO": "0", "OMIM": "0",
           "MSHSPA": "3", "SCTSPA": "9", "MDRSPA": "3", "MSHFRE": "3", "MDRFRE": "3"}
ENG_TTYS = ["PT", "SY", "MH", "ET", "PN", "FN", "LLT", "AB", "ACR"]
ENG_TTY_P = [0.25, 0.25, 0.08, 0.12, 0.05, 0.08, 0.11, 0.04, 0.02]
FOREIGN_TTYS = ["MH", "PT", "SY", "ET", "LLT"]
FOREIGN_TTY_P = [0.25, 0.25, 0.25, 0.15, 0.10]


def _pick(rng: np.random.Generator, n: int, probs: list[float]) -> np.ndarray:
    p = np.asarray(probs, dtype=float)
    return rng.choice(len(p), size=n, p=p / p.sum()).astype(np.int32)


def _name_pools(seed: int, size: int = 60_000) -> tuple[pa.Array, ...]:
    """Parallel (English, Spanish, French, English initials) pools of base concept names."""
    r = random.Random(seed)
    en, es, fr = [], [], []
    for _ in range(size):
        c, a, m = r.choice(CONDITIONS), r.choice(ANATOMY), r.choice(MODIFIERS)
        style = r.random()
        if style < 0.4:
            e, s, f = f"{m[0]} {c[0]} of {a[0]}", f"{c[1]} {m[1]} de {a[1]}", \
                f"{c[2]} {m[2]} de {a[2]}"
        elif style < 0.7:
            e, s, f = f"{m[0]} {a[0]} {c[0]}", f"{c[1]} {m[1]} del {a[1]}", \
                f"{c[2]} {m[2]} du {a[2]}"
        else:
            c2, a2 = r.choice(CONDITIONS), r.choice(ANATOMY)
            e = f"{m[0]} {c[0]} of {a[0]} with {c2[0]} of {a2[0]}"
            s = f"{c[1]} {m[1]} de {a[1]} con {c2[1]} de {a2[1]}"
            f = f"{c[2]} {m[2]} de {a[2]} avec {c2[2]} de {a2[2]}"
        en.append(e[0].upper() + e[1:])
        es.append(s[0].upper() + s[1:])
        fr.append(f[0].upper() + f[1:])
    initials = pc.utf8_upper(pc.replace_substring_regex(pa.array(en), r"(\w)\w*[^\w]*", r"\1"))
    return pa.array(en), pa.array(es), pa.array(fr), initials


def _ids(prefix: str, numbers: np.ndarray, width: int) -> pa.Array:
    digits = pc.utf8_lpad(pc.cast(pa.array(numbers), pa.string()), width, "0")
    return pc.binary_join_element_wise(prefix, digits, "")


def _lookup(values: list[str], idx: np.ndarray) -> pa.Array:
    return pa.array(values).take(pa.array(idx))


def _mrconso_chunk(rng: np.random.Generator, cui: np.ndarray, pos: np.ndarray,
                   row0: int, pools: tuple[pa.Array, ...], cui_width: int = 7) -> pa.Array:
    """MRCONSO lines (each ending in '|\\n') for one chunk of rows, as one string array."""
    n = len(cui)
    first = pos == 0
    # Language: the first atom of every concept is English (it carries the preferred name).
    lang = np.where(first, 0, _pick(rng, n, [0.72, 0.16, 0.12]))
    eng, spa = lang == 0, lang == 1
    sab = np.where(eng, _pick(rng, n, ENG_SAB_P),
                   np.where(spa, len(ENG_SABS) + rng.integers(0, len(SPA_SABS), n),
                            len(ENG_SABS) + len(SPA_SABS) + rng.integers(0, len(FRE_SABS), n)))
    sab = np.where(first, np.where(rng.random(n) < 0.5, 0, 1), sab)  # MSH / SNOMEDCT_US
    tty = np.where(eng, _pick(rng, n, ENG_TTY_P),
                   len(ENG_TTYS) + _pick(rng, n, FOREIGN_TTY_P))
    tty = np.where(first, 0, tty)
    abbrev = eng & ((tty == ENG_TTYS.index("AB")) | (tty == ENG_TTYS.index("ACR")))

    # Names: the concept's base name (pool entry + qualifier), in the atom's language, with
    # per-atom variants (lower case, ", NOS", "(disorder)", initials for AB/ACR).
    base = np.uint64(2654435761) * cui.astype(np.uint64) % np.uint64(len(pools[0]))
    qual = (cui.astype(np.int64) * 7 + 3) % len(QUALIFIERS)
    base = pa.array(base.astype(np.int64))
    names = pc.choose(pa.array(lang), *(p.take(base) for p in pools[:3]))
    quals = pc.choose(pa.array(lang), *(_lookup([q[i] for q in QUALIFIERS], qual)
                                        for i in range(3)))
    text = pc.binary_join_element_wise(names, quals, "")
    variant = np.where(first, 0, _pick(rng, n, [0.45, 0.2, 0.15, 0.2]))
    variant = np.where(abbrev, 4, variant)
    initials = pools[3].take(base)
    text = pc.choose(pa.array(variant), text, pc.utf8_lower(text),
                     pc.binary_join_element_wise(text, ", NOS", ""),
                     pc.binary_join_element_wise(text, " (disorder)", ""), initials)

    ts = np.where(first, 0, (rng.random(n) < 0.25).astype(np.int32))
    stt = np.where(first, 0, _pick(rng, n, [0.7, 0.15, 0.1, 0.05]))
    ispref = np.where(first, 0, (rng.random(n) < 0.4).astype(np.int32))
    suppress = np.where(first, 0, _pick(rng, n, [0.94, 0.03, 0.01, 0.02]))
    cvf = _pick(rng, n, [0.7, 0.2, 0.1])

    # Codes: a per-source style. Same concept + source -> same code.
    code_num = (cui.astype(np.int64) * 1_000_003 + sab * 7919) % 900_000 + 100_000
    style = np.array([SAB_CODE_STYLE.get(s, 4) for s in SABS])[sab]
    num = pc.cast(pa.array(code_num), pa.string())
    icd = pc.binary_join_element_wise(
        _lookup(list("ABCDEFGHIJKLMNOPRSTZ"), code_num % 20),
        pc.cast(pa.array(code_num % 100), pa.string()),
        pc.cast(pa.array(code_num // 100 % 10), pa.string()), "")
    icd = pc.binary_join_element_wise(pc.utf8_slice_codeunits(icd, 0, 3), ".",
                                      pc.utf8_slice_codeunits(icd, 3), "")
    code = pc.choose(pa.array(style), pc.binary_join_element_wise("D", num, ""),
                     pc.binary_join_element_wise(num, "00", ""), icd,
                     pc.binary_join_element_wise("C", num, ""), num)
    is_msh, is_sct = style == 0, style == 1
    empty = pa.nulls(n, pa.string()).fill_null("")
    scui = pc.if_else(pa.array(is_msh), _ids("M", code_num, 7),
                      pc.if_else(pa.array(is_sct | (style >= 3)), code, empty))
    sdui = pc.if_else(pa.array(is_msh), code, empty)
    rows = np.arange(row0, row0 + n, dtype=np.int64)
    saui = pc.if_else(pa.array(is_sct), pc.cast(pa.array(rows * 97 + 1_000_011), pa.string()),
                      empty)
    aui = _ids("A", (rows * 2654435761) % 100_000_000, 8)
    lui = _ids("L", (cui.astype(np.int64) * 3 + variant % 2 + lang * 5) % 10_000_000, 7)
    sui = _ids("S", (cui.astype(np.int64) * 11 + variant * 3 + lang) % 10_000_000, 7)

    fields = [
        _ids("C", cui, cui_width), _lookup(["ENG", "SPA", "FRE"], lang), _lookup(["P", "S"], ts),
        lui, _lookup(["PF", "VO", "VC", "VW"], stt), sui, _lookup(["Y", "N"], ispref), aui,
        saui, scui, sdui, _lookup(SABS, sab), _lookup(ENG_TTYS + FOREIGN_TTYS, tty), code,
        text, _lookup([SAB_SRL[s] for s in SABS], sab), _lookup(["N", "O", "E", "Y"], suppress),
        _lookup(["", "256", "4096"], cvf),
    ]
    return pc.binary_join_element_wise(*fields, "\n", "|")


def _write_lines(f, lines: pa.Array) -> int:
    lines = lines.cast(pa.large_string()) if lines.type != pa.large_string() else lines
    offsets = np.frombuffer(lines.buffers()[1], dtype=np.int64)
    start, end = int(offsets[lines.offset]), int(offsets[lines.offset + len(lines)])
    f.write(memoryview(lines.buffers()[2])[start:end])
    return end - start


def generate_mrconso(path: Path, rows: int, seed: int, chunk_rows: int = 500_000) -> np.ndarray:
    """Write ``rows`` MRCONSO rows: ~4 atoms per concept (3-5), CUIs ascending. Returns the
    concepts' CUI numbers."""
    rng = np.random.default_rng(seed)
    n_cuis = rows // 3 + 1
    per_cui = rng.integers(3, 6, n_cuis)  # 3, 4 or 5 atoms
    n_cuis = int(np.searchsorted(np.cumsum(per_cui), rows)) + 1
    per_cui = per_cui[:n_cuis]
    # Sparse and ascending like a release (gaps shrink for huge files to stay in C + 7 digits).
    gap_hi = min(8, max(2, 2 * 9_000_000 // n_cuis))
    cui_num = 5 + np.cumsum(rng.integers(1, gap_hi, n_cuis))
    cui = np.repeat(cui_num, per_cui)[:rows]
    starts = np.repeat(np.cumsum(per_cui) - per_cui, per_cui)[:rows]
    pos = np.arange(rows) - starts
    pools = _name_pools(seed)
    tmp = path.with_suffix(".partial")
    with open(tmp, "wb") as f:
        for i, row0 in enumerate(range(0, rows, chunk_rows)):
            sl = slice(row0, min(rows, row0 + chunk_rows))
            chunk_rng = np.random.default_rng([seed, i])
            _write_lines(f, _mrconso_chunk(chunk_rng, cui[sl], pos[sl], row0, pools,
                                           cui_width(cui_num)))
    os.replace(tmp, path)
    return cui_num


def cui_width(cui_num: np.ndarray) -> int:
    return max(7, len(str(int(cui_num[-1]))))



# --------------------------------------------------------------------------------------------
# MRDEF, MRSTY, MRREL
# --------------------------------------------------------------------------------------------

DEFINITION_SHARE = 0.11
SECOND_DEFINITION_SHARE = 0.3  # of defined concepts: 1.3 definitions each
DEF_SABS = ["MSH", "NCI", "CSP", "MEDLINEPLUS", "HPO", "MSHSPA"]
DEF_SAB_P = [0.35, 0.35, 0.1, 0.08, 0.1, 0.02]  # MSHSPA: a Spanish definition, dropped for ENG
SEMANTIC_TYPES = [  # (TUI, STN, STY)
    ("T047", "B2.2.1.2.1", "Disease or Syndrome"), ("T191", "B2.2.1.2.1.2", "Neoplastic Process"),
    ("T023", "A1.2.3.1", "Body Part, Organ, or Organ Component"),
    ("T184", "A2.2.2", "Sign or Symptom"), ("T033", "A2.2", "Finding"),
    ("T037", "B2.3", "Injury or Poisoning"), ("T121", "A1.4.1.1.1", "Pharmacologic Substance"),
    ("T061", "B1.3.1.3", "Therapeutic or Preventive Procedure"),
]
SEMANTIC_TYPE_P = [0.3, 0.1, 0.1, 0.1, 0.15, 0.05, 0.1, 0.1]
SECOND_TYPE_SHARE = 0.1
# (REL, its inverse, RELAs stated from CUI2's side and their inverses, pairs per concept).
# MRREL has every relation twice, once from each side.
ATTRIBUTE_RELAS = [("has_finding_site", "finding_site_of"), ("associated_with",
                   "associated_with"), ("has_causative_agent", "causative_agent_of"),
                   ("may_be_treated_by", "may_treat"), ("", "")]
PAIRED_RELS = [("RO", "RO", 1.5), ("SIB", "SIB", 1.5), ("RB", "RN", 0.5), ("SY", "SY", 0.5),
               ("RQ", "RQ", 0.25), ("AQ", "QB", 0.25)]
REL_SABS = ["MSH", "SNOMEDCT_US", "NCI", "MDR"]
REL_SAB_P = [0.3, 0.45, 0.15, 0.1]


def _join(*fields) -> pa.Array:
    """RRF lines: the fields joined by '|', each line ending in '|\\n'."""
    return pc.binary_join_element_wise(*fields, "\n", "|")


def _cuis(numbers: np.ndarray, width: int) -> pa.Array:
    return _ids("C", numbers, width)


def generate_mrdef(path: Path, cui_num: np.ndarray, seed: int) -> int:
    rng = np.random.default_rng([seed, 1])
    width = cui_width(cui_num)
    defined = cui_num[rng.random(len(cui_num)) < DEFINITION_SHARE]
    twice = defined[rng.random(len(defined)) < SECOND_DEFINITION_SHARE]
    cuis = np.sort(np.concatenate([defined, twice]))
    n = len(cuis)
    words = [[c[0] for c in CONDITIONS], [a[0] for a in ANATOMY], [m[0] for m in MODIFIERS]]

    def pick(i: int) -> pa.Array:
        return _lookup(words[i], rng.integers(0, len(words[i]), n))

    text = pc.binary_join_element_wise(
        "A ", pick(2), " ", pick(0), " of the ", pick(1), " characterized by ", pick(0),
        " and ", pick(0), " of the ", pick(1), ".", "")
    rows = np.arange(n, dtype=np.int64)
    sab = _pick(rng, n, DEF_SAB_P)
    suppress = _pick(rng, n, [0.98, 0.02])
    empty = pa.nulls(n, pa.string()).fill_null("")
    lines = _join(_cuis(cuis, width), _ids("A", rows * 7 + 11, 8), _ids("AT", rows * 13 + 5, 8),
                  empty, _lookup(DEF_SABS, sab), text, _lookup(["N", "Y"], suppress), empty)
    with open(path, "wb") as f:
        _write_lines(f, lines)
    return n


def generate_mrsty(path: Path, cui_num: np.ndarray, seed: int) -> int:
    rng = np.random.default_rng([seed, 2])
    width = cui_width(cui_num)
    second = cui_num[rng.random(len(cui_num)) < SECOND_TYPE_SHARE]
    cuis = np.sort(np.concatenate([cui_num, second]))
    n = len(cuis)
    kind = _pick(rng, n, SEMANTIC_TYPE_P)
    lines = _join(_cuis(cuis, width), *(_lookup([t[i] for t in SEMANTIC_TYPES], kind)
                                        for i in range(3)),
                  _ids("AT", np.arange(n, dtype=np.int64) * 17 + 3, 8),
                  _lookup(["256"], np.zeros(n, dtype=np.int32)))
    with open(path, "wb") as f:
        _write_lines(f, lines)
    return n


def _relation_pairs(rng: np.random.Generator, n_concepts: int) -> list[tuple]:
    """(index of CUI1, REL, index of CUI2, RELA) arrays, both directions of every relation."""
    out = []
    # Hierarchy: each concept after the first 1% has 1 or 2 parents among the concepts before
    # it, mostly near it (a deep, narrow tree like a source's hierarchy).
    children = np.arange(max(1, n_concepts // 100), n_concepts)
    children = np.concatenate([children, children[rng.random(len(children)) < 0.5]])
    back = np.minimum(children, 1 + rng.geometric(0.002, len(children)))
    parents = children - back
    # A PAR row: CUI2 is a parent of CUI1; its CHD row states it from the parent's side.
    out.append((children, "PAR", parents, "inverse_isa"))
    out.append((parents, "CHD", children, "isa"))
    for rel, inverse, per_concept in PAIRED_RELS:
        k = int(per_concept * n_concepts)
        a, b = rng.integers(0, n_concepts, k), rng.integers(0, n_concepts, k)
        keep = a != b
        a, b = a[keep], b[keep]
        if rel == "RO":
            which = rng.integers(0, len(ATTRIBUTE_RELAS), len(a))
            out.append((a, rel, b, _lookup([r[0] for r in ATTRIBUTE_RELAS], which)))
            out.append((b, inverse, a, _lookup([r[1] for r in ATTRIBUTE_RELAS], which)))
        else:
            out.append((a, rel, b, ""))
            out.append((b, inverse, a, ""))
    return out


def generate_mrrel(path: Path, cui_num: np.ndarray, seed: int,
                   chunk_rows: int = 1_000_000) -> int:
    rng = np.random.default_rng([seed, 3])
    width = cui_width(cui_num)
    total = 0
    with open(path, "wb") as f:
        for cui1, rel, cui2, rela in _relation_pairs(rng, len(cui_num)):
            for start in range(0, len(cui1), chunk_rows):
                sl = slice(start, start + chunk_rows)
                a, b = cui_num[cui1[sl]], cui_num[cui2[sl]]
                n = len(a)
                rows = np.arange(total, total + n, dtype=np.int64)
                sab = _lookup(REL_SABS, _pick(rng, n, REL_SAB_P))
                rela_col = rela[sl] if isinstance(rela, pa.Array) else \
                    pa.nulls(n, pa.string()).fill_null(rela)
                empty = pa.nulls(n, pa.string()).fill_null("")
                lines = _join(
                    _cuis(a, width), _ids("A", rows * 3 + 1, 8), _lookup(["AUI"], np.zeros(
                        n, dtype=np.int32)), pa.nulls(n, pa.string()).fill_null(rel),
                    _cuis(b, width), _ids("A", rows * 5 + 2, 8), _lookup(["AUI"], np.zeros(
                        n, dtype=np.int32)), rela_col, _ids("R", rows + 1, 9), empty, sab, sab,
                    empty, empty, _lookup(["N", "O"], _pick(rng, n, [0.99, 0.01])), empty)
                _write_lines(f, lines)
                total += n
    return total


def write_release(meta: Path, concepts: int, seed: int = 0) -> dict:
    """Write META/{MRCONSO,MRDEF,MRSTY,MRREL}.RRF for about ``concepts`` concepts; returns the
    rows of each file and the concept count."""
    meta.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    cui_num = generate_mrconso(meta / "MRCONSO.RRF", rows=4 * concepts, seed=seed)
    rows = {"concepts": len(cui_num),
            "MRCONSO.RRF": 4 * concepts,
            "MRDEF.RRF": generate_mrdef(meta / "MRDEF.RRF", cui_num, seed),
            "MRSTY.RRF": generate_mrsty(meta / "MRSTY.RRF", cui_num, seed),
            "MRREL.RRF": generate_mrrel(meta / "MRREL.RRF", cui_num, seed)}
    rows["seconds"] = round(time.perf_counter() - started, 1)
    return rows


def release(data_dir: Path, concepts: int, seed: int = 0) -> tuple[Path, dict]:
    """The cached release for ``concepts`` and ``seed`` under ``data_dir`` (written if missing):
    its META directory and its row counts."""
    meta = data_dir / f"umls_{concepts}_seed{seed}_v{RELEASE_VERSION}" / "META"
    summary = meta / "rows.json"
    if not summary.exists():
        rows = write_release(meta, concepts, seed)
        summary.write_text(json.dumps(rows))
    return meta, json.loads(summary.read_text())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--concepts", type=int, default=200_000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", required=True, help="the release directory (META/ inside)")
    args = parser.parse_args()
    print(json.dumps(write_release(Path(args.out) / "META", args.concepts, args.seed)))


if __name__ == "__main__":
    main()
