"""Reading an offline W&B run back, for the tests that check what the logger wrote.

wandb 0.31 no longer ships a reader for its ``.wandb`` file, nor writes
``wandb-summary.json`` offline, so the tests parse the transaction log (LevelDB log
format) with wandb's own protobuf definitions instead of syncing the run.
"""
from __future__ import annotations

import json
import os
import struct
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Iterable, List, Union

from wandb.proto import wandb_internal_pb2 as pb


@dataclass
class OfflineRun:
    """What an offline run folder holds: its config, history rows, summary and files."""

    path: Path
    config: Dict[str, Any]
    history: List[Dict[str, Any]]
    summary: Dict[str, Any]
    files: List[str]
    complete: bool = True
    """Whether the log ends with the run's ``exit`` record (the run was finished)."""

    def keys(self) -> List[str]:
        """Every key logged in the history, sorted."""
        return sorted({k for row in self.history for k in row})


def _records(path: Path) -> Iterable[bytes]:
    """Records of a ``.wandb`` transaction log (LevelDB log format: 32 KiB blocks, 7-byte headers)."""
    data = path.read_bytes()
    if data[:4] != b":W&B":
        raise ValueError(f"{path} is not a W&B transaction log")
    block = 32768
    pos, pending = 7, b""
    while pos + 7 <= len(data):
        left = block - pos % block
        if left < 7:
            pos += left
            continue
        _crc, length, kind = struct.unpack("<IHB", data[pos : pos + 7])
        if length == 0 and kind == 0:
            pos += left
            continue
        if pos + 7 + length > len(data):
            return  # a record still being written
        chunk = data[pos + 7 : pos + 7 + length]
        pos += 7 + length
        if kind == 1:
            yield chunk
        elif kind == 2:
            pending = chunk
        elif kind == 3:
            pending += chunk
        elif kind == 4:
            yield pending + chunk
            pending = b""


def _item_key(item) -> str:
    return ".".join(item.nested_key) if len(item.nested_key) else item.key


def read_offline_run(run_dir: Union[str, os.PathLike], wait: float = 30.0) -> OfflineRun:
    """Read back a local run folder (``wandb/offline-run-*``) without syncing it.

    wandb's service may still be writing the log for a moment after
    ``run.finish()`` returns: this waits up to ``wait`` seconds for the run's final
    ``exit`` record (``OfflineRun.complete`` says if it came).
    """
    run_dir = Path(run_dir)
    logs = sorted(run_dir.glob("*.wandb"))
    if not logs:
        raise FileNotFoundError(f"no .wandb file in {run_dir}")
    deadline = time.monotonic() + wait
    while True:
        records = []
        for raw in _records(logs[0]):
            record = pb.Record()
            record.ParseFromString(raw)
            records.append(record)
        complete = any(r.WhichOneof("record_type") == "exit" for r in records)
        if complete or time.monotonic() >= deadline:
            break
        time.sleep(0.1)
    config: Dict[str, Any] = {}
    history: List[Dict[str, Any]] = []
    summary: Dict[str, Any] = {}
    for record in records:
        kind = record.WhichOneof("record_type")
        if kind == "run":
            for item in record.run.config.update:
                config[_item_key(item)] = json.loads(item.value_json)
        elif kind == "config":
            for item in record.config.update:
                config[_item_key(item)] = json.loads(item.value_json)
        elif kind == "history":
            history.append({_item_key(i): json.loads(i.value_json) for i in record.history.item})
        elif kind == "summary":
            for item in record.summary.update:
                summary[_item_key(item)] = json.loads(item.value_json)
    files = sorted(str(p.relative_to(run_dir)) for p in run_dir.rglob("*") if p.is_file())
    return OfflineRun(run_dir, config, history, summary, files, complete)
