"""Release files read in byte ranges: every row once, whatever the range boundaries cut."""

import pyarrow as pa
import pyarrow.csv as pacsv
import pytest

from biolord_ray.kg.delimited import DelimitedRanges, read_range

COLUMNS = ["id", "active", "term", "_end"]
KEEP = ["id", "active", "term"]


def _whole_file(path, header: bool) -> pa.Table:
    return pacsv.read_csv(
        path, read_options=pacsv.ReadOptions(column_names=COLUMNS, skip_rows=int(header)),
        parse_options=pacsv.ParseOptions(delimiter="|", quote_char=False),
        convert_options=pacsv.ConvertOptions(column_types={c: pa.string() for c in COLUMNS},
                                             include_columns=KEEP))


def _by_ranges(source: DelimitedRanges) -> pa.Table:
    tables = [t for path, start, end in source.ranges
              for t in read_range(path, start, end, COLUMNS, KEEP, "|", source.header)]
    return pa.concat_tables(tables) if tables else None


@pytest.mark.parametrize("header", [False, True])
@pytest.mark.parametrize("range_bytes", [1, 7, 16, 33, 10_000])
def test_ranges_hold_every_row_once(tmp_path, header, range_bytes):
    rows = ["id|active|term|"] if header else []
    # Short and long rows (one longer than several ranges), quotes left as they are, a CRLF
    # row, and no newline after the last row.
    rows += ["1|1|fever|", "22|0|a \"quoted\" term|", "333|1|" + "x" * 50 + "|",
             "4|1|cough|\r", "5|1|last|"]
    path = tmp_path / "release.txt"
    path.write_bytes("\n".join(rows).encode())
    source = DelimitedRanges([str(path)], COLUMNS, KEEP, "|", header, range_bytes=range_bytes)
    assert _by_ranges(source).to_pylist() == _whole_file(path, header).to_pylist()
    assert len(source.ranges) == -(-path.stat().st_size // range_bytes)


def test_empty_file_has_no_rows(tmp_path):
    path = tmp_path / "empty.RRF"
    path.write_bytes(b"")
    assert _by_ranges(DelimitedRanges([str(path)], COLUMNS, KEEP, "|", False)) is None


def test_ray_data_reads_ranges_of_several_files(ray_local, tmp_path):
    import ray.data

    paths = []
    for n in range(2):
        path = tmp_path / f"part{n}.RRF"
        path.write_text("".join(f"{n}{i:03d}|1|term {i}|\n" for i in range(200)))
        paths.append(str(path))
    source = DelimitedRanges(paths, COLUMNS, KEEP, "|", False, range_bytes=256)
    rows = ray.data.read_datasource(source, override_num_blocks=len(source.ranges)).take_all()
    assert sorted(r["id"] for r in rows) == sorted(f"{n}{i:03d}" for n in range(2)
                                                   for i in range(200))
    assert len(source.ranges) > 2 * len(paths)
