"""Long documents in pieces: what packing tokenizes at once is bounded, whatever a document's length.

A document is a `str`, or, where it is too long to hold at once (a 1 GB .txt file), any iterable of
`str`: its consecutive pieces, read when iterated (`_files.TextFile`). Packing tokenizes each piece
on its own and puts EOS after a document's last piece only.

Pieces are cut by one rule that depends only on the text: a document of at most PIECE_CHARS
characters is one piece (so short documents give exactly the ids they always gave); a longer one is
cut, from its start, at most PIECE_CHARS characters apart, after the last newline that lies between
two characters that are not whitespace in the piece's second half (else after any newline there,
else before a space, else anywhere). The text given whole or read in chunks is cut at the same places,
so the windows and their fingerprint are the same on every run. Near each cut the ids may differ from
tokenizing the whole document at once (a sentencepiece tokenizer starts every piece with its word
marker; byte-level BPE cut between "X\\nY" gives the same ids): windows of documents longer than
PIECE_CHARS are packed piecewise.
"""
from __future__ import annotations

from typing import Iterable, Iterator, Union

# characters tokenized at once. A fast tokenizer's encodings take ~400 B per token (ids, offsets,
# token strings): 256 Ki characters cost 25-60 MB (4 to 1.3 characters per token). Larger than
# nearly every document (the standard library's largest module but one is 229 kB), which keep
# their exact ids.
PIECE_CHARS = 1 << 18

Document = Union[str, Iterable[str]]


def _cut(buf: str, lo: int, hi: int) -> int:
    """Where to end the piece buf[lo:...]: an index in (lo, hi] (buf[hi] exists). See the module."""
    floor = lo + (hi - lo) // 2
    first = i = buf.rfind("\n", floor, hi)
    # a newline between two non-blank characters: byte-level BPE splits there anyway
    while i > floor and (buf[i - 1].isspace() or buf[i + 1].isspace()):
        i = buf.rfind("\n", floor, i)
    if i > floor:
        return i + 1
    if first >= 0:
        return first + 1
    space = buf.rfind(" ", floor + 1, hi)  # before a space: " word" stays one pre-token
    return space if space > floor else hi


def pieces(chunks: Iterable[str], limit: int | None = None) -> Iterator[str]:
    """The pieces (each <= `limit` characters, PIECE_CHARS by default; none empty) of the text
    `chunks` join to, cut as the module says; the cuts do not depend on how the text is split into
    chunks. Holds at most `limit` + one chunk's characters."""
    limit = limit or PIECE_CHARS
    buf, start = "", 0
    for chunk in chunks:
        buf = buf[start:] + chunk if start < len(buf) else chunk
        start = 0
        while len(buf) - start > limit:
            cut = _cut(buf, start, start + limit)
            yield buf[start:cut]
            start = cut
    if start < len(buf):
        yield buf[start:]


def document_pieces(doc: Document, limit: int | None = None) -> Iterator[str]:
    """A document's pieces: a short str is its own one piece (even ""), a long one is cut, an
    iterable gives its own."""
    limit = limit or PIECE_CHARS
    if isinstance(doc, str):
        if len(doc) <= limit:
            yield doc
        else:
            yield from pieces([doc], limit)
    else:
        yield from doc
