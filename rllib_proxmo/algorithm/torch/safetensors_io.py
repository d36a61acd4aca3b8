"""Tensors in safetensors files on any pyarrow filesystem, and a content hash of weights.

RLlib's ``Checkpointable`` writes every state as one pickle; the LLM module keeps its
weights in a safetensors file next to it instead (no pickle to execute on load, the
format ``transformers`` and vLLM read). Non-tensor state travels as JSON in the file's
``__metadata__`` header.
"""

from __future__ import annotations

import hashlib
import json
import struct
from collections.abc import Mapping
from typing import Any

import pyarrow.fs
import torch
from safetensors.torch import load, load_file, save, save_file

#: Key of the JSON-encoded non-tensor state in a safetensors file's metadata.
STATE_METADATA_KEY = "rllib_proxmo_state"


def tensors_sha256(tensors: Mapping[str, torch.Tensor]) -> str:
    """SHA-256 over the names, dtypes, shapes and bytes of ``tensors`` (sorted by name)."""
    digest = hashlib.sha256()
    for name in sorted(tensors):
        tensor = tensors[name].detach()
        digest.update(f"{name}|{tensor.dtype}|{tuple(tensor.shape)}|".encode())
        digest.update(tensor.cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def write_state(
    filesystem: pyarrow.fs.FileSystem, path: str, tensors: Mapping[str, torch.Tensor], state: Mapping[str, Any]
) -> None:
    """Write ``tensors`` and the JSON-serialisable ``state`` to the safetensors file ``path``."""
    contiguous = {name: tensor.detach().cpu().contiguous() for name, tensor in tensors.items()}
    metadata = {STATE_METADATA_KEY: json.dumps(dict(state))}
    if isinstance(filesystem, pyarrow.fs.LocalFileSystem):
        save_file(contiguous, path, metadata=metadata)
        return
    with filesystem.open_output_stream(path) as stream:
        stream.write(save(contiguous, metadata=metadata))


def read_state(filesystem: pyarrow.fs.FileSystem, path: str) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """The tensors and the non-tensor state of a file written by :func:`write_state`."""
    if isinstance(filesystem, pyarrow.fs.LocalFileSystem):
        with open(path, "rb") as file:
            header = _header(file.read(8), file.read)
        tensors = load_file(path)
    else:
        with filesystem.open_input_stream(path) as stream:
            data = stream.readall()
        header = _header(data[:8], lambda size: data[8 : 8 + size])
        tensors = load(data)
    return tensors, json.loads(header.get("__metadata__", {}).get(STATE_METADATA_KEY, "{}"))


def _header(size_bytes: bytes, read: Any) -> dict[str, Any]:
    """The JSON header of a safetensors file (an 8-byte little-endian length, then the JSON)."""
    (size,) = struct.unpack("<Q", size_bytes)
    return json.loads(read(size))


def exists(filesystem: pyarrow.fs.FileSystem, path: str) -> bool:
    return filesystem.get_file_info(path).type == pyarrow.fs.FileType.File


def resolve(path: Any, filesystem: pyarrow.fs.FileSystem | None) -> tuple[pyarrow.fs.FileSystem, str]:
    """``(filesystem, path inside it)`` as RLlib's ``Checkpointable`` resolves them."""
    path = path if isinstance(path, str) else path.as_posix()
    if filesystem is None:
        filesystem, path = pyarrow.fs.FileSystem.from_uri(path)
    return filesystem, path
