"""How a batch is cut into chunks: one rule for the producer and for ``assetq run``.

A chunk is the unit a worker process takes. Chunks of at most ``chunk_size`` keep
batching's gain. With one process, a batch is cut into as few chunks as that
allows, of one size but the last (17 images at 16: 9 + 8, not 16 + 1).

With several processes, the end of a batch is where a process sits idle: equal
counts are not equal costs (a chunk of 12 MP originals takes several times one
of thumbnails), and whichever process draws the last heavy chunk runs on alone.
So the cut follows *factoring* (Hummel, Schonberg and Flynn, 1992): rounds of
one chunk per process, each chunk half of what is left divided among the
processes, at most ``chunk_size``. A large batch runs at full chunks until its
last ~2 rounds' worth, then the chunks halve round by round down to one asset,
and processes that drew light chunks take the small ones while a heavy one
finishes. 24 images on 2 processes: 6 6 3 3 2 2 1 1.
"""

from __future__ import annotations

from typing import TypeVar

T = TypeVar("T")


def chunk_sizes(count: int, chunk_size: int, processes: int) -> list[int]:
    """Sizes of the chunks, in queue order, that ``count`` assets are cut into for ``processes`` processes."""
    chunk_size, processes = max(1, chunk_size), max(1, processes)
    if count <= 0:
        return []
    if processes == 1:
        size = -(-count // -(-count // chunk_size))
        return [min(size, count - start) for start in range(0, count, size)]
    sizes: list[int] = []
    left = count
    while left > 0:
        size = min(chunk_size, -(-left // (2 * processes)))
        for _ in range(processes):
            take = min(size, left)
            if take == 0:
                break
            sizes.append(take)
            left -= take
    return sizes


def cut(items: list[T], sizes: list[int]) -> list[list[T]]:
    """``items`` cut into consecutive chunks of ``sizes`` (which sum to ``len(items)``)."""
    chunks: list[list[T]] = []
    start = 0
    for size in sizes:
        chunks.append(items[start : start + size])
        start += size
    return chunks
