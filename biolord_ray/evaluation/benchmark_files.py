"""File-based pair benchmarks: two texts and a gold similarity score per row.

A preset knows a benchmark's file format and columns; a path points at the file. Rows whose
text is empty are skipped and counted; anything else that does not fit the preset (missing
column, wrong number of fields, non-numeric score, empty file) raises
:class:`EvalFormatError` naming the file, the line and what was expected.

A preset also says which domain its benchmark measures: biomedical (all but one), or general
language (``stsb``, the STS Benchmark). Reports show general-language benchmarks in their own
"general STS" column, and model selection leaves them out (``suite.main_score``).
"""

from __future__ import annotations

import csv
import json
import math
from dataclasses import dataclass, field, replace
from pathlib import Path

BUNDLED_DIR = Path(__file__).parent / "data"

BIOMEDICAL, GENERAL = "biomedical", "general"  # what a benchmark measures (PairFormat.domain)


class EvalFormatError(ValueError):
    """A benchmark file that does not match its preset; the message says where and why."""

    def __init__(self, path: str | Path, message: str, line: int | str | None = None):
        self.path, self.line = str(path), line
        where = f"{path}:{line}" if line is not None else str(path)
        super().__init__(f"{where}: {message}")

    def __reduce__(self):  # keep the fields when the error crosses a Ray task boundary
        return (_rebuild_error, (self.path, self.args[0], self.line))


def _rebuild_error(path: str, full_message: str, line: int | str | None) -> EvalFormatError:
    err = EvalFormatError.__new__(EvalFormatError)
    ValueError.__init__(err, full_message)
    err.path, err.line = path, line
    return err


@dataclass(frozen=True)
class PairFormat:
    # "csv", "tsv", "json" (a list of objects), "jsonl", or None: decided by the extension.
    kind: str | None
    text1: str
    text2: str
    score: str
    about: str
    # CSV/TSV without a header row: the name of each field, in order (every line has exactly
    # these fields). None: the first row is the header.
    columns: tuple[str, ...] | None = None
    # False: quote characters are text (fields are split on the delimiter only).
    quoted: bool = True
    domain: str = BIOMEDICAL


PRESETS: dict[str, PairFormat] = {
    "umnsrs-sim": PairFormat("csv", "Term1", "Term2", "Mean",
                             "UMNSRS similarity CSV (Mean,Stdev,Term1,Term2,CUI1,CUI2)"),
    "umnsrs-rel": PairFormat("csv", "Term1", "Term2", "Mean",
                             "UMNSRS relatedness CSV (Mean,Stdev,Term1,Term2,CUI1,CUI2)"),
    "mayosrs": PairFormat("json", "term1", "term2", "value",
                          'MayoSRS JSON list of {"value", "term1", "term2"}'),
    "minimayosrs": PairFormat("json", "term1", "term2", "value",
                              'MiniMayoSRS JSON list of {"value", "term1", "term2"}'),
    "ehr-rel": PairFormat("tsv", "snomed_label_1", "snomed_label_2", "mean_rating",
                          "EHR-Rel TSV (snomed_id_1, snomed_label_1, ..., mean_rating, CUI_1, "
                          "CUI_2)"),
    "biosses": PairFormat("tsv", "sentence1", "sentence2", "score",
                          "BIOSSES TSV with sentence1, sentence2, score"),
    "sts": PairFormat(None, "sentence1", "sentence2", "score",
                      "any CSV/TSV/JSON/JSONL with two text columns and a score column "
                      "(STS-B style; columns set in the config)"),
    # The STS Benchmark's own files (sts-dev.csv, sts-test.csv, ...): general-English
    # sentences whose quotes are unbalanced text, not CSV quoting.
    "stsb": PairFormat("tsv", "sentence1", "sentence2", "score",
                       "STS Benchmark TSV without a header, 7 tab-separated fields: genre, "
                       "file, year, id, score (0-5), sentence1, sentence2",
                       columns=("genre", "file", "year", "id", "score", "sentence1",
                                "sentence2"),
                       quoted=False, domain=GENERAL),
}

# The bundled dev files (see data/README.md): suite "dev".
BUNDLED = {
    "ehr-rel-a": ("ehr-rel", BUNDLED_DIR / "EHR-RelA.tsv"),
    "minimayosrs-physicians": ("minimayosrs", BUNDLED_DIR / "MiniMayoSRS.physicians.json"),
    "minimayosrs-coders": ("minimayosrs", BUNDLED_DIR / "MiniMayoSRS.coders.json"),
}


@dataclass
class PairSet:
    name: str
    path: str
    texts1: list[str] = field(default_factory=list)
    texts2: list[str] = field(default_factory=list)
    scores: list[float] = field(default_factory=list)
    n_skipped: int = 0  # rows with an empty text
    domain: str = BIOMEDICAL


def pair_format(preset: str, text1: str | None = None, text2: str | None = None,
                score: str | None = None) -> PairFormat:
    if preset not in PRESETS:
        raise ValueError(f"unknown benchmark preset {preset!r}; known presets: "
                         f"{', '.join(PRESETS)}")
    base = PRESETS[preset]
    return replace(base, text1=text1 or base.text1, text2=text2 or base.text2,
                   score=score or base.score)


def load_pairs(name: str, path: str | Path, preset: str, text1: str | None = None,
               text2: str | None = None, score: str | None = None) -> PairSet:
    """Read a pair benchmark file in the format ``preset`` describes."""
    fmt = pair_format(preset, text1, text2, score)
    path = Path(path).expanduser()
    if not path.is_file():
        raise EvalFormatError(path, f"no such file (benchmark {name!r}, preset {preset}: "
                                    f"{fmt.about})")
    kind = fmt.kind or _kind_from_suffix(path)
    rows = _read_json_rows(path) if kind in ("json", "jsonl") else \
        _read_delimited_rows(path, "\t" if kind == "tsv" else ",", fmt)
    pairs = PairSet(name=name, path=str(path), domain=fmt.domain)
    for line, row in rows:
        for column in (fmt.text1, fmt.text2, fmt.score):
            if column not in row:
                raise EvalFormatError(path, f"missing field {column!r}; preset {preset} expects "
                                            f"{fmt.text1!r}, {fmt.text2!r} and {fmt.score!r} "
                                            f"({fmt.about}); found {sorted(row)}", line)
        value = _score(row[fmt.score], path, line, fmt.score)
        text_a, text_b = (str(row[c] or "").strip() for c in (fmt.text1, fmt.text2))
        if not text_a or not text_b:
            pairs.n_skipped += 1
            continue
        pairs.texts1.append(text_a)
        pairs.texts2.append(text_b)
        pairs.scores.append(value)
    if not pairs.scores:
        raise EvalFormatError(path, f"no usable pairs ({pairs.n_skipped} rows with an empty "
                                    f"text); preset {preset} expects {fmt.about}")
    if len(set(pairs.scores)) < 2:
        raise EvalFormatError(path, "every pair has the same score; a correlation needs at "
                                    "least two different gold scores")
    return pairs


def _kind_from_suffix(path: Path) -> str:
    suffix = path.suffix.lower().lstrip(".")
    if suffix in ("csv", "tsv", "json", "jsonl"):
        return suffix
    raise EvalFormatError(path, "cannot tell the format from the extension; use .csv, .tsv, "
                                ".json or .jsonl")


def _read_delimited_rows(path: Path, delimiter: str, fmt: PairFormat):
    with path.open(newline="", encoding="utf-8") as f:
        reader = csv.reader(f, delimiter=delimiter,
                            quoting=csv.QUOTE_MINIMAL if fmt.quoted else csv.QUOTE_NONE)
        if fmt.columns:
            return _positional_rows(path, reader, fmt)
        header = next(reader, None)
        if header is None:
            raise EvalFormatError(path, f"empty file; expected a header row with {fmt.text1!r}, "
                                        f"{fmt.text2!r} and {fmt.score!r}")
        header = [h.strip() for h in header]
        missing = [c for c in (fmt.text1, fmt.text2, fmt.score) if c not in header]
        if missing:
            raise EvalFormatError(path, f"missing column(s) {', '.join(map(repr, missing))} "
                                        f"in the header; expected {fmt.about}; found {header}", 1)
        rows = []
        for values in reader:
            if not any(v.strip() for v in values):
                continue  # blank line
            if len(values) != len(header):
                raise EvalFormatError(path, f"{len(values)} fields, the header has "
                                            f"{len(header)}", reader.line_num)
            rows.append((reader.line_num, dict(zip(header, values, strict=True))))
    return rows


def _positional_rows(path: Path, reader, fmt: PairFormat):
    """Rows of a file without a header: each line has exactly ``fmt.columns`` fields."""
    rows = []
    for values in reader:
        if not any(v.strip() for v in values):
            continue  # blank line
        if len(values) != len(fmt.columns):
            raise EvalFormatError(path, f"{len(values)} fields, expected {len(fmt.columns)} "
                                        f"({fmt.about})", reader.line_num)
        rows.append((reader.line_num, dict(zip(fmt.columns, values, strict=True))))
    if not rows:
        raise EvalFormatError(path, f"empty file; expected {fmt.about}")
    return rows


def _read_json_rows(path: Path):
    text = path.read_text(encoding="utf-8")
    if not text.strip():
        raise EvalFormatError(path, "empty file; expected a JSON list of objects or JSON lines")
    if path.suffix.lower() == ".jsonl" or not text.lstrip().startswith("["):
        rows = []
        for number, line in enumerate(text.splitlines(), start=1):
            if line.strip():
                rows.append((number, _json_object(line, path, number)))
        return rows
    try:
        items = json.loads(text)
    except json.JSONDecodeError as err:
        raise EvalFormatError(path, f"not valid JSON: {err.msg}", err.lineno) from err
    rows = []
    for index, item in enumerate(items):
        if not isinstance(item, dict):
            raise EvalFormatError(path, f"item {index} is {type(item).__name__}, expected an "
                                        "object")
        rows.append((f"item {index}", item))
    return rows


def _json_object(line: str, path: Path, number: int) -> dict:
    try:
        item = json.loads(line)
    except json.JSONDecodeError as err:
        raise EvalFormatError(path, f"not valid JSON: {err.msg}", number) from err
    if not isinstance(item, dict):
        raise EvalFormatError(path, f"expected a JSON object, got {type(item).__name__}", number)
    return item


def _score(raw, path: Path, line, column: str) -> float:
    try:
        value = float(raw)
    except (TypeError, ValueError):
        raise EvalFormatError(path, f"score {column!r} is {raw!r}, expected a number",
                              line) from None
    if math.isnan(value) or math.isinf(value):
        raise EvalFormatError(path, f"score {column!r} is {raw!r}, expected a finite number",
                              line)
    return value
