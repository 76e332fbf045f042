"""Append-only arrays that live in memory or spill to disk and come back memory-mapped.

Ingesting a large log builds every array block by block: an ``ArraySink`` either keeps the blocks
(``directory=None``) or writes them to ``<directory>/<name>.bin`` and returns a read-only memory map,
so the process holds only the pages it touches.

Example:
    >>> sink = ArraySink(None, "ts", np.int64)
    >>> sink.append(np.arange(3)); sink.append(np.arange(2))
    >>> sink.finish().tolist()
    [0, 1, 2, 0, 1]
"""

from __future__ import annotations

import mmap
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from duet_sdk.errors import DataError

CHUNK = 1 << 22  # rows per block when a pass walks a (possibly memory-mapped) array


class ArraySink:
    """Rows of one array with a fixed ``tail`` shape (rows are (*tail,)), appended in blocks."""

    def __init__(self, directory: Path | None, name: str, dtype: np.dtype | type, tail: tuple[int, ...] = ()) -> None:
        self.dtype, self.tail, self.rows = np.dtype(dtype), tuple(tail), 0
        self._blocks: list[np.ndarray] = []
        self.path = None if directory is None else Path(directory) / f"{name}.bin"
        self._file = None if self.path is None else open(self.path, "wb")

    def append(self, block: np.ndarray) -> None:
        block = np.ascontiguousarray(block, dtype=self.dtype)
        if block.shape[1:] != self.tail:
            raise DataError(f"{self.path or 'sink'}: expected rows of shape {self.tail}, got {block.shape[1:]}")
        self.rows += len(block)
        if self._file is None:
            self._blocks.append(block)
        else:
            self._file.write(block.tobytes())

    def finish(self) -> np.ndarray:
        """The whole array: in memory, or a read-only memory map of the spill file."""
        shape = (self.rows, *self.tail)
        if self._file is None:
            return np.concatenate(self._blocks) if self._blocks else np.zeros(shape, self.dtype)
        self._file.close()
        if self.rows == 0 or 0 in self.tail:
            return np.zeros(shape, self.dtype)
        return np.asarray(np.memmap(self.path, dtype=self.dtype, mode="r", shape=shape))


def chunks(n: int, size: int = CHUNK) -> Iterator[slice]:
    """Consecutive slices covering ``range(n)``."""
    for lo in range(0, n, size):
        yield slice(lo, min(n, lo + size))


def release(*arrays: np.ndarray) -> None:
    """Drop the resident pages of memory-mapped ``arrays`` from this process (they stay in the page
    cache and fault back in when read again); in-memory arrays are left alone."""
    for array in arrays:
        base = array
        while base is not None and not isinstance(base, np.memmap):
            base = base.base
        handle = getattr(base, "_mmap", None)
        if handle is not None:
            handle.madvise(mmap.MADV_DONTNEED)


def spill_dir(root: Path | None, name: str) -> Path | None:
    """``root/name`` created (None stays None: in memory)."""
    if root is None:
        return None
    path = Path(root) / name
    path.mkdir(parents=True, exist_ok=True)
    return path
