"""How a batch is cut into chunks: one rule for the producer and for ``assetq run``.

A chunk is the unit a worker process takes. Chunks of at most ``chunk_size`` keep
batching's gain; beyond that, their number is rounded up to a multiple of the
processes that will run them, so the last round of chunks gives every process one
and none sits idle while another finishes (24 images on 2 processes: 12 + 12,
not 16 + 8).
"""

from __future__ import annotations


def chunk_size_for(count: int, chunk_size: int, processes: int) -> int:
    """The chunk size for ``count`` assets on ``processes`` processes, at most ``chunk_size``."""
    chunk_size, processes = max(1, chunk_size), max(1, processes)
    if count <= 0:
        return chunk_size
    chunks = -(-count // chunk_size)
    chunks = -(-chunks // processes) * processes
    return max(1, -(-count // chunks))
