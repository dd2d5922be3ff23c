"""Errors in KG input files, and finding the line that caused one.

pyarrow's CSV reader reports a wrong column count without a line number when it reads in
parallel, and an undecodable byte without any position at all; Ray Data adds the task
around it. When a streaming read fails, :func:`locate_bad_line` rescans the file line by
line (only then, so the fast path stays pyarrow's) and names the first offending line.
"""

from __future__ import annotations

from collections.abc import Iterable


class KGFormatError(ValueError):
    """Bad KG input; the message names the file, and the line where one is known."""

    def __init__(self, path: str, message: str, line: int | None = None):
        self.path, self.message, self.line = path, message, line
        where = f"{path}, line {line}" if line is not None else path
        super().__init__(f"{where}: {message}")

    def __reduce__(self):
        # Raised inside Ray tasks: rebuild from the parts, not from the formatted message.
        return type(self), (self.path, self.message, self.line)


def locate_bad_line(
    path: str, delimiter: str, n_fields: int, skip_header: bool = False
) -> KGFormatError | None:
    """First line of ``path`` that is not UTF-8 or does not have ``n_fields`` fields."""
    with open(path, "rb") as f:
        for number, raw in enumerate(f, start=1):
            if skip_header and number == 1:
                continue
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as err:
                return KGFormatError(path, f"byte {err.start} is not valid UTF-8: {raw[:120]!r}",
                                     number)
            fields = line.rstrip("\r\n").split(delimiter)
            if len(fields) != n_fields:
                return KGFormatError(
                    path, f"expected {n_fields} fields separated by {delimiter!r}, got "
                    f"{len(fields)} (truncated or malformed row): {line.rstrip()[:160]!r}", number)
    return None


def find_lines(path: str, prefixes: Iterable[str], limit: int = 2) -> list[int]:
    """Line numbers of lines starting with one of ``prefixes`` (for duplicate-id messages)."""
    wanted = tuple(prefixes)
    found = []
    with open(path, encoding="utf-8", errors="replace") as f:
        for number, line in enumerate(f, start=1):
            if line.startswith(wanted):
                found.append(number)
                if len(found) >= limit:
                    break
    return found
