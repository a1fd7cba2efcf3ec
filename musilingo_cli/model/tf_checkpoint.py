"""Read a TensorFlow (V2 format) checkpoint into numpy arrays without TensorFlow.

A V2 checkpoint is `PREFIX.index` plus `PREFIX.data-00000-of-0000N`. The index is a LevelDB
table (sorted string keys in blocks, prefix-compressed, a footer naming the index block;
format: github.com/google/leveldb/blob/main/doc/table_format.md) whose values are serialised
`BundleEntryProto`s (tensorflow/core/protobuf/tensor_bundle.proto): dtype, shape, shard, byte
offset and size of each tensor in the data shards, stored raw in little-endian order. Only
what reading plain float/int tensors needs is implemented: no compression, no partitioned
(sliced) variables. Nothing here executes code from the checkpoint.
"""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np

from musilingo_cli.core.errors import CheckpointError

_MAGIC = 0xDB4775248B80FB57
_FOOTER = 48
_DTYPES = {1: np.float32, 2: np.float64, 3: np.int32, 9: np.int64, 19: np.float16, 10: np.bool_}


def read_tf_checkpoint(prefix: str | Path) -> dict[str, np.ndarray]:
    """Every tensor of the checkpoint at `prefix` (without `.index`; a directory holding one
    checkpoint also works): name -> array.

    Raises CheckpointError when the files are missing, not a V2 checkpoint, or hold a dtype or
    a feature (compression, sliced variables) this reader does not support.
    """
    if Path(prefix).is_dir():
        found = sorted(Path(prefix).glob("*.index"))
        prefix = str(found[0])[: -len(".index")] if len(found) == 1 else Path(prefix) / "model"
    index = Path(str(prefix) + ".index")
    if not index.is_file():
        raise CheckpointError(f"{index}: no such TensorFlow checkpoint index")
    raw = index.read_bytes()
    if len(raw) < _FOOTER or struct.unpack("<Q", raw[-8:])[0] != _MAGIC:
        raise CheckpointError(f"{index}: not a TensorFlow V2 checkpoint index (bad table magic)")
    footer = raw[-_FOOTER:]
    _, pos = _handle(footer, 0)  # metaindex block: unused
    index_block, _ = _handle(footer, pos)
    shards: dict[int, bytes] = {}
    tensors: dict[str, np.ndarray] = {}
    for _, handle_bytes in _block_entries(_block(raw, *index_block, index)):
        offset, size = _handle(handle_bytes, 0)[0]
        for key, value in _block_entries(_block(raw, offset, size, index)):
            if not key:  # the BundleHeaderProto
                continue
            name = key.decode()
            tensors[name] = _tensor(name, _fields(value), prefix, shards)
    return tensors


def _tensor(name: str, entry: dict[int, list], prefix: str | Path, shards: dict[int, bytes]) -> np.ndarray:
    if 7 in entry:
        raise CheckpointError(f"{prefix}: tensor {name!r} is partitioned into slices, which is not supported")
    dtype = _DTYPES.get(entry.get(1, [0])[0])
    if dtype is None:
        raise CheckpointError(f"{prefix}: tensor {name!r} has unsupported dtype enum {entry.get(1, [0])[0]}")
    dims = [_fields(d).get(1, [0])[0] for d in _fields(entry[2][0]).get(2, [])] if 2 in entry else []
    shard, offset, size = entry.get(3, [0])[0], entry.get(4, [0])[0], entry.get(5, [0])[0]
    if shard not in shards:
        found = sorted(
            Path(str(prefix) + f".data-{shard:05d}-of-00001").parent.glob(
                Path(str(prefix) + "x").name[:-1] + f".data-{shard:05d}-of-*"
            )
        )
        if not found:
            raise CheckpointError(f"{prefix}: data shard {shard} of the checkpoint is missing")
        shards[shard] = found[0].read_bytes()
    data = shards[shard][offset : offset + size]
    if len(data) != size or size != int(np.prod(dims, dtype=np.int64)) * np.dtype(dtype).itemsize:
        raise CheckpointError(f"{prefix}: tensor {name!r} has {len(data)} bytes, not what shape {dims} needs")
    return np.frombuffer(data, dtype=np.dtype(dtype).newbyteorder("<")).reshape(dims).copy()


def _varint(buf: bytes, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        byte = buf[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if byte < 0x80:
            return result, pos
        shift += 7


def _handle(buf: bytes, pos: int) -> tuple[tuple[int, int], int]:
    offset, pos = _varint(buf, pos)
    size, pos = _varint(buf, pos)
    return (offset, size), pos


def _block(raw: bytes, offset: int, size: int, path: Path) -> bytes:
    if raw[offset + size] != 0:  # the trailer's first byte: 0 = uncompressed
        raise CheckpointError(f"{path}: compressed table blocks are not supported")
    return raw[offset : offset + size]


def _block_entries(block: bytes):
    """(key, value) pairs of a table block; keys share prefixes with the previous key."""
    restarts = struct.unpack("<I", block[-4:])[0]
    end = len(block) - 4 - 4 * restarts
    pos, key = 0, b""
    while pos < end:
        shared, pos = _varint(block, pos)
        unshared, pos = _varint(block, pos)
        length, pos = _varint(block, pos)
        key = key[:shared] + block[pos : pos + unshared]
        pos += unshared
        yield key, block[pos : pos + length]
        pos += length


def _fields(message: bytes) -> dict[int, list]:
    """A protobuf message's fields by number: varints as ints, length-delimited as bytes."""
    fields: dict[int, list] = {}
    pos = 0
    while pos < len(message):
        tag, pos = _varint(message, pos)
        number, wire = tag >> 3, tag & 7
        if wire == 0:
            value, pos = _varint(message, pos)
        elif wire == 2:
            length, pos = _varint(message, pos)
            value, pos = message[pos : pos + length], pos + length
        elif wire == 5:
            value, pos = struct.unpack("<I", message[pos : pos + 4])[0], pos + 4
        elif wire == 1:
            value, pos = struct.unpack("<Q", message[pos : pos + 8])[0], pos + 8
        else:
            raise CheckpointError(f"unsupported protobuf wire type {wire} in a checkpoint index")
        fields.setdefault(number, []).append(value)
    return fields
