"""How one delivered landing file is read: its compression, its header and one streaming pass over its bytes.

A daily extract arrives as ``<dataset>_<day>[.<part>].csv`` or gzip-compressed as ``….csv.gz``.
Spreadsheet exports may start the file with a UTF-8 byte-order mark and quote the header's
names; both are valid CSV and read as the plain header. Any other compression (zip, bzip2,
xz, zstd, or gzip under a ``.csv`` name) is recognised by its leading bytes and named in the
rejection reason instead of being reported as text that is not UTF-8.

``inspect_file`` reads the bytes once, a chunk at a time, so memory stays constant whatever
the file's size; the caller supplies the chunks (a local file, or a cloud object streamed
through Hadoop's file system).
"""

from __future__ import annotations

import codecs
import csv
import gzip
import hashlib
import io
import re
import zlib
from collections.abc import Iterable, Iterator

BOM = "\ufeff"
# Leading bytes of the compressed formats an export tool writes.
MAGIC = ((b"\x1f\x8b", "gzip"), (b"PK\x03\x04", "zip"), (b"PK\x05\x06", "zip"), (b"PK\x07\x08", "zip"),
         (b"BZh", "bzip2"), (b"\xfd7zXZ\x00", "xz"), (b"\x28\xb5\x2f\xfd", "zstd"))
MAX_LINE_KEPT = 1 << 20  # of a line still open at a chunk's end, the bytes kept (the header is never longer)
_LINE_BREAK = re.compile(rb"\r\n|\r|\n")  # what Spark's CSV reader splits lines on


def compression_of(head: bytes) -> str | None:
    """The compressed format the file's first bytes announce, or None for uncompressed content."""
    return next((name for magic, name in MAGIC if head.startswith(magic)), None)


def expected_compression(path: str) -> str | None:
    """The compression a delivery's name promises: gzip for ``.csv.gz``, none otherwise."""
    return "gzip" if path.lower().endswith(".gz") else None


def parse_header(line: str | None) -> list[str]:
    """Column names of a header line: a leading byte-order mark dropped, CSV quotes removed, names stripped."""
    if not line:
        return []
    return [name.strip() for name in next(csv.reader([line.removeprefix(BOM)], skipinitialspace=True), [])]


def compression_problem(path: str, found: str | None) -> str | None:
    """Why a file's compression does not match its name, or None when it does."""
    name, expected = path.rsplit("/", 1)[-1], expected_compression(path)
    if found == expected:
        return None
    if found is None:
        return f"{name} is named .gz but is not gzip-compressed; deliver it as .csv.gz or uncompressed as .csv"
    return f"{name} is {found}-compressed; deliver it as .csv.gz or uncompressed"


class _ChunkReader(io.RawIOBase):
    """A read-only binary stream over an iterator of byte chunks, counting the bytes it hands out."""

    def __init__(self, chunks: Iterable[bytes]):
        self._chunks, self._view, self.read_bytes = iter(chunks), memoryview(b""), 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        """Fill ``buffer`` from as many chunks as it takes; less only at the end of the content."""
        done = 0
        while done < len(buffer):
            if not self._view:
                chunk = next(self._chunks, None)
                if chunk is None:
                    break
                self._view = memoryview(chunk)
            n = min(len(buffer) - done, len(self._view))
            buffer[done:done + n] = self._view[:n]
            self._view, done = self._view[n:], done + n
        self.read_bytes += done
        return done


def _blocks(stream, size: int) -> Iterator[bytes]:
    while block := stream.read(size):
        yield block


class _LineCounter:
    """Non-blank lines over chunks (``\\n``, ``\\r\\n`` or ``\\r``), keeping the first: memory bounded by a chunk."""

    def __init__(self):
        self.count, self.first = 0, None
        self._open, self._open_cut_nonblank = b"", False  # the line still open at the last chunk's end

    def _line(self, line: bytes, cut_nonblank: bool = False) -> None:
        if cut_nonblank or line.strip():
            self.count += 1
            if self.first is None:
                self.first = line

    def feed(self, chunk: bytes) -> None:
        lines = _LINE_BREAK.split(self._open + chunk)
        tail = lines.pop()
        if lines:
            self._line(lines[0], self._open_cut_nonblank)
            self._open_cut_nonblank = False
            for line in lines[1:]:
                self._line(line)
        if len(tail) > MAX_LINE_KEPT:  # a line without end (a binary file): keep only whether it is blank
            self._open_cut_nonblank |= bool(tail[MAX_LINE_KEPT:].strip())
            tail = tail[:MAX_LINE_KEPT]
        self._open = tail

    def close(self) -> None:
        self._line(self._open, self._open_cut_nonblank)
        self._open = b""


def inspect_file(path: str, chunks: Iterable[bytes], block_bytes: int = 8 << 20) -> dict:
    """Content hash, sizes, compression, UTF-8 validity, header and data lines of one delivered file.

    Args:
        path: the file's name as delivered; ``.csv.gz`` promises gzip-compressed content.
        chunks: the file's bytes in order, in chunks of any size.
        block_bytes: how much decompressed content is handled at a time.

    Returns:
        ``path``; ``bytes`` (as delivered); ``content_bytes`` and ``sha256`` of the CSV content
        (decompressed for a ``.csv.gz``, so the same extract is recognised in either form);
        ``compression`` (found from the leading bytes); ``utf8``; ``header`` (the first non-blank
        line); ``data_lines`` (the other non-blank lines); ``problem`` (why the file cannot be
        read as CSV, or None).
    """
    raw = _ChunkReader(chunks)
    delivered = io.BufferedReader(raw, buffer_size=block_bytes)
    found = compression_of(delivered.peek(8)[:8])
    problem = compression_problem(path, found)
    content = gzip.GzipFile(fileobj=delivered, mode="rb") if found == "gzip" and problem is None else delivered
    sha, decoder, lines, size, utf8 = hashlib.sha256(), codecs.getincrementaldecoder("utf-8")(), _LineCounter(), 0, True
    try:
        for block in _blocks(content, block_bytes):
            sha.update(block)
            size += len(block)
            if problem is None:
                if utf8:
                    try:
                        decoder.decode(block)
                    except UnicodeDecodeError:
                        utf8 = False
                lines.feed(block)
        if utf8:
            decoder.decode(b"", final=True)
    except UnicodeDecodeError:
        utf8 = False
    except (OSError, EOFError, zlib.error) as exc:  # a corrupt or truncated gzip stream
        problem = f"unreadable: the gzip content of {path.rsplit('/', 1)[-1]} is corrupt or truncated ({exc})"
    lines.close()
    while delivered.read(block_bytes):  # what follows an unreadable stream still counts as delivered
        pass
    header = lines.first.decode("utf-8", errors="replace") if lines.first is not None else None
    return {"path": path, "sha256": sha.hexdigest(), "bytes": raw.read_bytes, "content_bytes": size,
            "compression": found, "utf8": utf8, "header": header, "data_lines": max(lines.count - 1, 0),
            "problem": problem}
