"""Read an offline W&B run file (``run-*.wandb``) back: its history rows, as {key: value}.

The file is a LevelDB-style log (a 7-byte ``:W&B`` header, 32 KiB blocks, records with a
7-byte header: crc32, little-endian length, type FULL/FIRST/MIDDLE/LAST) of protobuf
``Record`` messages; the reader that shipped in wandb's Python package moved to its Go core.
"""

import json
import struct
from pathlib import Path

from wandb.proto import wandb_internal_pb2 as pb

BLOCK = 32768
FULL, FIRST, MIDDLE, LAST = 1, 2, 3, 4


def records(path: Path):
    data = Path(path).read_bytes()
    assert data[:4] == b":W&B", "not a W&B run file"
    pos, parts = 7, []
    while pos + 7 <= len(data):
        left = BLOCK - pos % BLOCK
        if left < 7:  # block trailer padding
            pos += left
            continue
        _crc, length, kind = struct.unpack("<IHB", data[pos : pos + 7])
        if kind == 0 and length == 0:
            pos += left
            continue
        if pos + 7 + length > len(data):  # a record the service is still writing: read up to it
            return
        payload = data[pos + 7 : pos + 7 + length]
        pos += 7 + length
        if kind == FULL:
            yield payload
        elif kind == FIRST:
            parts = [payload]
        elif kind == MIDDLE:
            parts.append(payload)
        elif kind == LAST:
            parts.append(payload)
            yield b"".join(parts)


def finished(path: Path) -> bool:
    """Whether the run's exit record has been written (wandb's service writes asynchronously)."""
    for raw in records(path):
        rec = pb.Record()
        rec.ParseFromString(raw)
        if rec.HasField("exit"):
            return True
    return False


def history(path: Path) -> list[dict]:
    rows = []
    for raw in records(path):
        rec = pb.Record()
        rec.ParseFromString(raw)
        if rec.HasField("history"):
            rows.append({(it.key or "/".join(it.nested_key)): json.loads(it.value_json) for it in rec.history.item})
    return rows
