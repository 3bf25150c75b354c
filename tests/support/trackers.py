"""Reading back what a training run left in its experiment trackers: an MLflow store, a W&B
offline run (wandb 0.31 has no Python reader of its own: its ``.wandb`` file is a LevelDB-style
log of protobuf ``Record``s, read here with wandb's own protobuf classes)."""

from __future__ import annotations

import json
import struct
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

BLOCK = 32 * 1024
HEADER = 7  # ":W&B" magic, a 2-byte tag and a version byte; then each chunk: crc32c, length, kind
FULL, FIRST, MIDDLE, LAST = 1, 2, 3, 4


def _records(path: Path) -> Iterator[bytes]:
    data = path.read_bytes()
    assert data[:4] == b":W&B", f"{path} is not a W&B run file"
    pos, parts = HEADER, b""
    while pos + HEADER <= len(data):
        left = BLOCK - pos % BLOCK
        if left < HEADER:  # a block's tail too short for a chunk header is padding
            pos += left
            continue
        _, length, kind = struct.unpack("<IHB", data[pos : pos + HEADER])
        if kind == 0 and length == 0:  # zero padding up to the block's end
            pos += left
            continue
        chunk = data[pos + HEADER : pos + HEADER + length]
        pos += HEADER + length
        if kind == FULL:
            yield chunk
        elif kind == FIRST:
            parts = chunk
        elif kind == MIDDLE:
            parts += chunk
        elif kind == LAST:
            yield parts + chunk


@dataclass
class WandbRun:
    """An offline W&B run: its run record and its history rows (keys joined with ``/``)."""

    run_id: str = ""
    name: str = ""
    project: str = ""
    tags: list[str] = field(default_factory=list)
    config: dict[str, Any] = field(default_factory=dict)
    history: list[dict[str, Any]] = field(default_factory=list)


def wandb_offline_run(run_dir: Path) -> WandbRun:
    from wandb.proto import wandb_internal_pb2 as pb

    (path,) = run_dir.glob("run-*.wandb")
    out = WandbRun()
    for raw in _records(path):
        record = pb.Record()
        record.ParseFromString(raw)
        kind = record.WhichOneof("record_type")
        if kind == "run":
            out.run_id, out.name, out.project = record.run.run_id, record.run.display_name, record.run.project
            out.tags = list(record.run.tags)
            out.config.update({i.key: json.loads(i.value_json) for i in record.run.config.update})
        elif kind == "config":
            out.config.update({i.key: json.loads(i.value_json) for i in record.config.update})
        elif kind == "history":
            out.history.append(
                {i.key or "/".join(i.nested_key): json.loads(i.value_json) for i in record.history.item}
            )
    return out
