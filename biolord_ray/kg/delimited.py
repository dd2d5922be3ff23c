"""Delimited release files (UMLS RRF, SNOMED CT RF2) read in byte ranges, one Ray read task
per range.

Written by hand because ``ray.data.read_csv`` reads a file in one task: a 1 GB MRREL (1M
concepts; a real release's is several GB) is parsed by one worker while the rest of the
cluster waits, and Ray Data then splits that task's output into more blocks, which stops it
from fusing the read with the maps and the write after it. Every block then went through the
object store, where they piled up faster than the write consumed them: at 1M UMLS concepts,
about 480 MiB of ingest's peak memory (70 MiB at 100k). Here a read task parses ``RANGE_BYTES`` of
a file, a task's memory does not grow with the file, and its output flows straight into the
maps and the write fused behind it.

Splitting at newlines is exact because neither format quotes fields: a line break always
ends a row. A row belongs to the range it starts in.
"""

from __future__ import annotations

import os

import pyarrow as pa
import pyarrow.csv as pacsv
from ray.data import Datasource, ReadTask
from ray.data.block import BlockMetadata

# A read task's share of a file: what one task holds as raw text, parsed into 1 MiB batches.
RANGE_BYTES = 32 * 2**20


class DelimitedRanges(Datasource):
    """``paths`` as string columns ``keep`` of ``columns``, in ranges of ``range_bytes``."""

    def __init__(self, paths: list[str], columns: list[str], keep: list[str], delimiter: str,
                 header: bool, range_bytes: int = RANGE_BYTES):
        self.columns, self.keep, self.delimiter, self.header = columns, keep, delimiter, header
        self.ranges = []  # (path, first byte, end byte)
        for path in paths:
            size = os.path.getsize(path)
            self.ranges += [(path, start, min(start + range_bytes, size))
                            for start in range(0, max(size, 1), range_bytes)]

    def estimate_inmemory_data_size(self) -> int:
        return sum(end - start for _, start, end in self.ranges)

    def get_name(self) -> str:
        return "ReadDelimited"

    def get_read_tasks(self, parallelism: int, per_task_row_limit: int | None = None,
                       data_context=None) -> list[ReadTask]:
        # One task per range whatever ``parallelism`` asks: the ranges bound a task's memory.
        schema = pa.schema([(name, pa.string()) for name in self.keep])
        return [ReadTask(lambda p=path, s=start, e=end: read_range(
                             p, s, e, self.columns, self.keep, self.delimiter, self.header),
                         BlockMetadata(num_rows=None, size_bytes=end - start,
                                       input_files=[path], exec_stats=None),
                         schema=schema, per_task_row_limit=per_task_row_limit)
                for path, start, end in self.ranges]


def read_range(path: str, start: int, end: int, columns: list[str], keep: list[str],
               delimiter: str, header: bool):
    """The rows of ``path`` that start in bytes [start, end), as Arrow tables."""
    with open(path, "rb") as f:
        first, stop = _row_start(f, start), _row_start(f, end)
        if stop <= first:  # a row longer than the range starts before it
            return
        f.seek(first)
        text = f.read(stop - first)
    reader = pacsv.open_csv(
        pa.BufferReader(text),
        read_options=pacsv.ReadOptions(column_names=columns,
                                       skip_rows=1 if header and first == 0 else 0),
        parse_options=pacsv.ParseOptions(delimiter=delimiter, quote_char=False,
                                         escape_char=False),
        convert_options=pacsv.ConvertOptions(
            column_types={c: pa.string() for c in columns}, include_columns=keep,
            strings_can_be_null=False, quoted_strings_can_be_null=False))
    for batch in reader:
        yield pa.Table.from_batches([batch])


def _row_start(f, offset: int) -> int:
    """Where the first row starting at or after ``offset`` begins (the file's end if none)."""
    if offset == 0:
        return 0
    f.seek(offset - 1)
    f.readline()  # the rest of the row that ``offset - 1`` is in, its newline included
    return f.tell()
