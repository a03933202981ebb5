"""The token store: a tokenized corpus written once as shards, read back row by row.

    STORE/plan.json            what the store holds: fingerprint (files, tokenizer, L), names,
                               K, L and every shard's input range (corpus.ShardSpec)
    STORE/shard-00000.npy      int32 [rows, A, K, L]: A = len(names) arrays (input_ids,
                               attention_mask[, token_type_ids]) of each row side by side
    STORE/shard-00000.json     its completion marker: rows, blank rows skipped, file size, and
                               a 64-bit BLAKE2b digest of every block of BLOCK_ROWS rows

Why .npy shards with a JSON index: any numpy reads them (`np.load(path, mmap_mode="r")`), they
need no new dependency, a row is one contiguous run of A·K·L·4 bytes at a computable offset, and
a shard is written whole by one worker (no shared writer). A shard exists once its marker does:
both are written to a temporary name and renamed, the marker last, so a killed build leaves
whole shards and nothing half written, and a resumed build redoes only unmarked shards.

Reading: `TokenStore.read_rows(indices)` reads exactly those rows with positioned reads
(`os.pread`), not through a long-lived memory map: the bytes pass through the page cache, which
the kernel may drop, and never count as this process's resident memory, so a host's memory does
not grow with the corpus or with the rows it has touched. The first read of a block checks its
digest; a file of the wrong size, a bad header or a block whose digest differs is named in one
line (`StoreError`) and refused, never read as zeros.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from typing import Any, Mapping

import numpy as np

from distilface_jax import run_folder

STORE_VERSION = 1  # bump when the layout or the row rules change
BLOCK_ROWS = 256  # rows per digest: a first read checks 256 rows (~100 KB at K=1, L=32, A=3)
PLAN_FILE = "plan.json"


class StoreError(ValueError):
    """A store that cannot be read as it claims: named in one line."""


def shard_name(index: int) -> str:
    return f"shard-{index:05d}"


def block_digests(rows: np.ndarray) -> str:
    """Concatenated 16-hex-digit BLAKE2b digests of each BLOCK_ROWS rows of `rows` [N, ...]."""
    return "".join(
        hashlib.blake2b(np.ascontiguousarray(rows[i : i + BLOCK_ROWS]).tobytes(), digest_size=8).hexdigest()
        for i in range(0, len(rows), BLOCK_ROWS)
    )


# ----------------------------------------------------------------------------- writing


def write_plan(folder: str, plan: Mapping[str, Any]) -> None:
    """plan.json, or a check that the one already there is the same plan (hosts write it alike)."""
    path = os.path.join(folder, PLAN_FILE)
    existing = read_plan(folder)
    if existing is not None:
        if existing != json.loads(json.dumps(plan)):
            raise StoreError(f"{path}: holds another corpus's plan (a changed corpus or shard size); move it away")
        return
    with run_folder.atomic_file(path, "w") as handle:
        json.dump(plan, handle, indent=1, sort_keys=True)


def read_plan(folder: str) -> dict | None:
    path = os.path.join(folder, PLAN_FILE)
    try:
        with open(path, encoding="utf-8") as handle:
            return json.load(handle)
    except FileNotFoundError:
        return None
    except ValueError as error:
        raise StoreError(f"{path}: unreadable ({error}); delete it to rebuild the store") from None


def write_shard(folder: str, index: int, arrays: Mapping[str, np.ndarray], names: list[str], skipped: int) -> dict:
    """Stacks `arrays` (each int32 [N, K, L]) into shard-NNNNN.npy [N, A, K, L], then its marker."""
    rows = np.stack([np.asarray(arrays[name], np.int32) for name in names], axis=1)  # [N, A, K, L]
    npy = os.path.join(folder, shard_name(index) + ".npy")
    with run_folder.atomic_file(npy, "wb", sync=True) as handle:
        np.lib.format.write_array(handle, rows, allow_pickle=False)
    marker = {
        "rows": int(rows.shape[0]),
        "skipped": int(skipped),
        "bytes": os.path.getsize(npy),
        "digests": block_digests(rows),
    }
    with run_folder.atomic_file(os.path.join(folder, shard_name(index) + ".json"), "w", sync=True) as handle:
        json.dump(marker, handle)
    return marker


def read_marker(folder: str, index: int) -> dict | None:
    """The shard's marker if the shard is complete (marker present, file of its size); else None."""
    base = os.path.join(folder, shard_name(index))
    try:
        with open(base + ".json", encoding="utf-8") as handle:
            marker = json.load(handle)
    except (FileNotFoundError, ValueError):
        return None
    try:
        if os.path.getsize(base + ".npy") != marker["bytes"]:
            return None
    except (FileNotFoundError, KeyError, TypeError):
        return None
    return marker


def shard_problem(folder: str, index: int) -> str | None:
    """Why shard `index` is not usable (one line), or None when it is."""
    base = os.path.join(folder, shard_name(index))
    if not os.path.exists(base + ".json"):
        return f"{base}.npy: not written yet (no marker {base}.json)"
    if not os.path.exists(base + ".npy"):
        return f"{base}.npy: missing (its marker says it was written)"
    if read_marker(folder, index) is None:
        return f"{base}.npy: size {os.path.getsize(base + '.npy')} bytes differs from its marker (truncated or corrupt)"
    return None


# ----------------------------------------------------------------------------- reading


@dataclasses.dataclass
class _Shard:
    path: str
    first_row: int  # global index of its row 0
    rows: int
    data_offset: int  # byte offset of row 0 (after the .npy header)
    digests: str
    verified: np.ndarray  # bool [blocks]: digest already checked in this process


class TokenStore:
    """A complete store opened for reading: `read_rows(global indices) -> {name: int32 [n, K, L]}`."""

    def __init__(self, folder: str, plan: Mapping[str, Any] | None = None):
        self.folder = folder
        self.plan = dict(plan if plan is not None else (read_plan(folder) or {}))
        if not self.plan:
            raise StoreError(f"{os.path.join(folder, PLAN_FILE)}: missing; the store was never planned here")
        self.names: list[str] = list(self.plan["names"])
        self.num_views, self.max_seq_length = int(self.plan["views"]), int(self.plan["max_seq_length"])
        self.row_shape = (len(self.names), self.num_views, self.max_seq_length)  # (A, K, L)
        self.row_bytes = 4 * int(np.prod(self.row_shape))
        self.shards: list[_Shard] = []
        self.num_skipped_lines = 0
        first = 0
        for index in range(len(self.plan["shards"])):
            problem = shard_problem(folder, index)
            if problem is not None:
                raise StoreError(f"token store {problem}; delete its .json marker to re-tokenize it")
            marker = read_marker(folder, index)
            shard = self._open_shard(index, marker, first)
            self.shards.append(shard)
            self.num_skipped_lines += int(marker["skipped"])
            first += shard.rows
        self.num_examples = first
        # first row of each shard, for a binary search from a global row to its shard
        self.starts = np.asarray([s.first_row for s in self.shards], np.int64)
        self.rows_read = 0  # rows this process has read: a host reads only its slice of each batch

    def _open_shard(self, index: int, marker: dict, first_row: int) -> _Shard:
        path = os.path.join(self.folder, shard_name(index) + ".npy")
        with open(path, "rb") as handle:
            try:
                version = np.lib.format.read_magic(handle)
                read_header = {(1, 0): np.lib.format.read_array_header_1_0, (2, 0): np.lib.format.read_array_header_2_0}
                shape, fortran, dtype = read_header[version](handle)
            except (ValueError, KeyError) as error:
                raise StoreError(
                    f"token store {path}: not a .npy file ({error}); delete its marker to re-tokenize"
                ) from None
            offset = handle.tell()
        expected = (int(marker["rows"]), *self.row_shape)
        if tuple(shape) != expected or fortran or dtype != np.dtype("<i4"):
            raise StoreError(
                f"token store {path}: holds {dtype} {tuple(shape)}, the plan says int32 {expected}; "
                "delete its marker to re-tokenize it"
            )
        blocks = -(-int(marker["rows"]) // BLOCK_ROWS)
        if len(marker["digests"]) != 16 * blocks:
            raise StoreError(f"token store {path}: its marker lists the wrong number of digests")
        return _Shard(path, first_row, int(marker["rows"]), offset, marker["digests"], np.zeros(blocks, bool))

    def locate(self, indices: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Global row indices → (shard number, row within the shard)."""
        indices = np.asarray(indices, np.int64)
        if indices.size and (indices.min() < 0 or indices.max() >= self.num_examples):
            raise IndexError(f"row index outside [0, {self.num_examples})")
        shard = np.searchsorted(self.starts, indices, side="right") - 1
        return shard, indices - self.starts[shard]

    def read_rows(self, indices) -> dict[str, np.ndarray]:
        """Rows `indices` in the order given: {name: int32 [n, K, L]}, read from disk and nothing else."""
        indices = np.asarray(indices, np.int64)
        out = np.empty((len(indices), *self.row_shape), np.int32)  # [n, A, K, L]
        shard_of, row_of = self.locate(indices)
        for number in np.unique(shard_of):
            shard = self.shards[number]
            where = np.nonzero(shard_of == number)[0]
            descriptor = os.open(shard.path, os.O_RDONLY)
            try:
                for block in np.unique(row_of[where] // BLOCK_ROWS):
                    if not shard.verified[block]:
                        self._verify_block(shard, descriptor, int(block))
                for position, row in zip(where, row_of[where]):
                    raw = os.pread(descriptor, self.row_bytes, shard.data_offset + int(row) * self.row_bytes)
                    if len(raw) != self.row_bytes:
                        raise StoreError(f"token store {shard.path}: row {row} is cut short (truncated file)")
                    out[position] = np.frombuffer(raw, "<i4").reshape(self.row_shape)
            finally:
                os.close(descriptor)
        self.rows_read += len(indices)
        return {name: np.ascontiguousarray(out[:, a]) for a, name in enumerate(self.names)}

    def _verify_block(self, shard: _Shard, descriptor: int, block: int) -> None:
        first = block * BLOCK_ROWS
        count = min(BLOCK_ROWS, shard.rows - first)
        raw = os.pread(descriptor, count * self.row_bytes, shard.data_offset + first * self.row_bytes)
        digest = hashlib.blake2b(raw, digest_size=8).hexdigest()
        if digest != shard.digests[16 * block : 16 * block + 16]:
            raise StoreError(
                f"token store {shard.path}: rows {first}..{first + count - 1} do not match their digest "
                "(corrupt); delete its .json marker to re-tokenize it"
            )
        shard.verified[block] = True
