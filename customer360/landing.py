"""Landing: stream one CSV file into its staging table with COPY.

The file is read once, as a stream: its checksum is computed on the way, each record is
mapped onto the canonical columns, and records that cannot be staged at all (a wrong number
of fields, bytes that are not UTF-8) go to the quarantine with their line number instead. A
quote left open does not take the lines after it along: the line that opened it is refused,
and the following lines are read again as records of their own.

Most lines hold no quote character; in a file laid out like the contract such a line is
passed to COPY as it is, behind its batch id, file name and line number, which costs a small
fraction of parsing and rewriting it with the csv module. Any other record goes through the
csv module.
"""

from __future__ import annotations

import csv
import hashlib
import io
import itertools
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from psycopg2.extras import execute_values

from customer360.errors import UserFacingError
from customer360.sources import CANONICAL_ORDER, SourceSpec

# Records are sent to COPY in chunks of this many: small enough (about a megabyte) that
# PostgreSQL parses one while the next is being prepared.
COPY_CHUNK_RECORDS = 10_000

# Read size when draining what COPY did not ask for.
READ_CHARS = 1024 * 1024

# Records with fields bigger than this are refused by the csv module; far above any real field.
csv.field_size_limit(16 * 1024 * 1024)

# A quoted field may hold line breaks; one still open after this many lines is taken for a
# quote left open by mistake (reading on would swallow the rest of the file).
MAX_RECORD_LINES = 100


@dataclass
class LandingResult:
    """What happened to one source file."""

    source: str
    path: str
    sha256: str = ""
    bytes: int = 0
    data_rows: int = 0
    landed: int = 0
    rejected: list[dict] = field(default_factory=list)  # quarantine entries


class _HashingReader(io.RawIOBase):
    """A binary stream that hashes and counts what passes through it."""

    def __init__(self, raw: io.BufferedReader) -> None:
        self._raw = raw
        self.sha256 = hashlib.sha256()
        self.bytes = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        count = self._raw.readinto(buffer)
        if count:
            self.sha256.update(memoryview(buffer)[:count])
            self.bytes += count
        return count


class _ChunkStream(io.TextIOBase):
    """A read-only text stream over an iterator of chunks, as COPY FROM STDIN expects."""

    def __init__(self, chunks: Iterator[str]) -> None:
        self._chunks = chunks

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> str:
        # COPY sends whatever it is given: a whole chunk at a time spares copying it. An empty
        # read ends the COPY, so a chunk whose every record was quarantined is skipped.
        for chunk in self._chunks:
            if chunk:
                return chunk
        return ""

    readline = read


def check_header(spec: SourceSpec, path: Path) -> None:
    """Refuse a missing file, or one whose header lacks a required column, before loading."""
    if not path.exists():
        raise UserFacingError(f"source file {path} does not exist")
    with path.open(encoding="utf-8-sig", errors="replace", newline="") as handle:
        header = next(csv.reader(handle), None)
    spec.column_positions(_checked_header(header, path), path.name)


def _checked_header(header: list[str] | None, path: Path) -> list[str]:
    """The file's first record, refused when there is none or it is blank (a header row
    must come first, not after an empty line)."""
    if header is None:
        raise UserFacingError(f"{path.name} is empty: expected a header row")
    if not any(name.strip() for name in header):
        raise UserFacingError(f"{path.name} starts with an empty line: expected a header row")
    return header


def land_file(cursor, spec: SourceSpec, path: Path, batch_id: int) -> LandingResult:
    """COPY one source file into ``staging.raw_<source>``; returns counts and rejected records."""
    if not path.exists():
        raise UserFacingError(f"source file {path} does not exist")
    result = LandingResult(source=spec.name, path=str(path))
    columns = ", ".join(("batch_id", "source_file", "line_number", *CANONICAL_ORDER[spec.name]))
    with path.open("rb") as binary:
        hashing = _HashingReader(binary)
        # utf-8-sig: a byte order mark (spreadsheets write one) is not part of the header.
        text = io.TextIOWrapper(
            io.BufferedReader(hashing), encoding="utf-8-sig", errors="surrogateescape", newline=""
        )
        header_reader = csv.reader(text)
        header = _checked_header(next(header_reader, None), path)
        positions = spec.column_positions(header, path.name)
        chunks = _staged_chunks(
            text, header_reader.line_num, len(header), positions, path.name, batch_id, result
        )
        cursor.copy_expert(
            f"copy staging.raw_{spec.name} ({columns}) from stdin with (format csv)",
            _ChunkStream(chunks),
        )
        # Drain what COPY may not have asked for, so the checksum covers the whole file.
        while text.read(READ_CHARS):
            pass
        result.sha256 = hashing.sha256.hexdigest()
        result.bytes = hashing.bytes
    if result.rejected:
        execute_values(
            cursor,
            """
            insert into audit.quarantine
                (batch_id, source, source_file, line_number, business_key, reason, detail, raw_row)
            values %s
            """,
            [
                (
                    batch_id,
                    spec.name,
                    path.name,
                    r["line"],
                    None,
                    r["reason"],
                    r["detail"],
                    json.dumps(r["raw"], ensure_ascii=False),
                )
                for r in result.rejected
            ],
        )
    return result


class _UnparseableError(Exception):
    """The csv module could not read a record starting at ``line`` from ``lines``."""

    def __init__(self, line: int, message: str, lines: list[str]) -> None:
        super().__init__(message)
        self.line = line
        self.lines = lines


def _record(
    line: str, more: Iterator[str], line_number: int
) -> tuple[int, str | list[str], list[str]]:
    """The record starting with ``line`` (line number ``line_number``), the number of its
    last line and the lines it was read from: a line without quotes as its text (a blank line
    as ""), any other record as the csv module parses it (a quoted field may hold line
    breaks: it then reads on, for at most ``MAX_RECORD_LINES`` lines)."""
    if '"' not in line:
        return line_number, line.rstrip("\r\n"), [line]
    read = [line]

    def following() -> Iterator[str]:
        for extra in more:
            read.append(extra)
            if len(read) > MAX_RECORD_LINES:
                raise _UnparseableError(
                    line_number,
                    f"a quoted field runs on for more than {MAX_RECORD_LINES} lines",
                    read,
                )
            yield extra

    # strict: a quote the file leaves open at its end is an error, not a field up to the end.
    reader = csv.reader(itertools.chain([line], following()), strict=True)
    try:
        record = next(reader)
    except csv.Error as exc:
        raise _UnparseableError(line_number, str(exc), read) from exc
    return line_number + len(read) - 1, record, read


def _staged_chunks(
    lines: Iterator[str],
    line_number: int,
    width: int,
    positions: list[int | None],
    file_name: str,
    batch_id: int,
    result: LandingResult,
) -> Iterator[str]:
    """Yield CSV text for COPY: batch id, file, line number and the canonical columns of each
    record after line ``line_number`` (the header)."""
    prefix = (batch_id, file_name)
    prefix_text = _csv_line(prefix)
    # Files laid out like the contract (the usual case) need no reordering, row by row.
    in_canonical_order = positions == list(range(width))
    commas = width - 1
    remaining = iter(lines)
    # Lines to read again, before the rest of the file (see the quote left open below).
    replay: Iterator[str] = iter(())
    buffer, writer, pending = _fresh_buffer()
    rows = 0
    while True:
        reading = itertools.chain(replay, remaining)
        for line in reading:
            line_number += 1
            # The usual line, passed through: plain fields in the contract's order, a Unix
            # line end.
            if (
                in_canonical_order
                and '"' not in line
                and line.count(",") == commas
                and line.endswith("\n")
                and not line.endswith("\r\n")
            ):
                buffer.write(f"{prefix_text},{line_number},{line}")
                pending.append((line_number, line))
                rows += 1
            else:
                first_line = line_number
                try:
                    line_number, record, read = _record(line, reading, line_number)
                except _UnparseableError as exc:
                    record, read, problem = None, exc.lines, str(exc)
                    quote_left_open = len(read) > 1
                else:
                    if record == "":
                        continue  # a blank line is not a record
                    fields = record.split(",") if isinstance(record, str) else record
                    problem = ""
                    if len(fields) != width:
                        problem = f"{len(fields)} fields, the header has {width}"
                    # A quoted field whose lines look like records of their own most likely
                    # swallowed them: its quote was left open.
                    quote_left_open = any(
                        '"' not in later and later.count(",") == commas for later in read[1:]
                    )
                    if quote_left_open and not problem:
                        problem = "a quoted field runs over lines that look like records"
                rows += 1
                if quote_left_open:
                    # Refuse the line that opened the quote, and read the lines after it
                    # again as records of their own.
                    result.rejected.append(
                        _rejection(
                            first_line,
                            "malformed_row",
                            f"{problem} (lines {first_line}-{first_line + len(read) - 1}):"
                            " a quote left open? The lines after this one are read again as"
                            " records of their own",
                            line.rstrip("\r\n").split(","),
                        )
                    )
                    line_number = first_line
                    replay = iter(read[1:] + list(replay))
                    break
                if problem:
                    result.rejected.append(
                        _rejection(
                            line_number,
                            "malformed_row",
                            problem,
                            fields if record is not None else line.rstrip("\r\n").split(","),
                        )
                    )
                    continue
                if isinstance(record, str) and in_canonical_order:
                    buffer.write(f"{prefix_text},{line_number},{record}\n")
                else:
                    writer.writerow(
                        (
                            *prefix,
                            line_number,
                            *[fields[p] if p is not None else "" for p in positions],
                        )
                    )
                pending.append((line_number, record))
            if len(pending) >= COPY_CHUNK_RECORDS:
                yield _checked_chunk(buffer, pending, prefix, positions, result)
                buffer, writer, pending = _fresh_buffer()
        else:
            break  # the whole file is read
    result.data_rows = rows
    if pending:
        yield _checked_chunk(buffer, pending, prefix, positions, result)


def _csv_line(values: tuple) -> str:
    """``values`` as one line of CSV, without its line break."""
    buffer, writer, _ = _fresh_buffer()
    writer.writerow(values)
    return buffer.getvalue().removesuffix("\n")


def _fresh_buffer():
    buffer = io.StringIO()
    return buffer, csv.writer(buffer, lineterminator="\n"), []


def _checked_chunk(buffer, pending, prefix, positions, result: LandingResult) -> str:
    """The chunk's text, or, if some records hold bytes PostgreSQL cannot store (invalid UTF-8,
    NUL), the chunk rebuilt without them and those records quarantined."""
    chunk = buffer.getvalue()
    try:
        chunk.encode("utf-8")
        if "\x00" not in chunk:
            result.landed += len(pending)
            return chunk
    except UnicodeEncodeError:
        pass
    clean, clean_writer, _ = _fresh_buffer()
    for line, pending_record in pending:
        # A quote-free line was kept as its text (see _staged_chunks).
        if isinstance(pending_record, str):
            record = pending_record.rstrip("\r\n").split(",")
        else:
            record = pending_record
        joined = "".join(record)
        try:
            joined.encode("utf-8")
            storable = "\x00" not in joined
        except UnicodeEncodeError:
            storable = False
        if storable:
            clean_writer.writerow(
                [*prefix, line, *[record[p] if p is not None else "" for p in positions]]
            )
            result.landed += 1
        else:
            printable = [
                f.encode("utf-8", "surrogateescape")
                .decode("utf-8", "replace")
                .replace("\x00", "\\0")
                for f in record
            ]
            result.rejected.append(
                _rejection(line, "invalid_encoding", "not valid UTF-8 text", printable)
            )
    return clean.getvalue()


def _rejection(line: int, reason: str, detail: str, record: list[str]) -> dict:
    return {"line": line, "reason": reason, "detail": detail, "raw": {"fields": record}}
