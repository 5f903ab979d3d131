"""Parameters in one canonical layout: named float32 arrays, in the order a
network's ``param_shapes`` gives, packed back to back in one flat buffer; and
save/load in the safetensors format (what candle and PyTorch read), written
here by hand because the format is only a length, a JSON header and the bytes.
"""
import json
import os
import struct

import numpy as np


def total_size(shapes: dict) -> int:
    return sum(int(np.prod(s)) for s in shapes.values())


def pack(params: dict, shapes: dict) -> np.ndarray:
    """Named arrays -> one flat float32 buffer in the canonical order."""
    missing = set(shapes) - set(params)
    if missing:
        raise ValueError(f"parameters missing: {', '.join(sorted(missing))}")
    parts = []
    for name, shape in shapes.items():
        a = np.asarray(params[name], dtype=np.float32)
        if a.shape != tuple(shape):
            raise ValueError(f"parameter {name!r} has shape {a.shape}, expected {tuple(shape)}")
        parts.append(a.ravel())
    return np.concatenate(parts) if parts else np.zeros(0, np.float32)


def unpack(flat: np.ndarray, shapes: dict) -> dict:
    """One flat buffer -> named copies in the canonical shapes."""
    out, offset = {}, 0
    for name, shape in shapes.items():
        size = int(np.prod(shape))
        out[name] = np.array(flat[offset:offset + size], dtype=np.float32).reshape(shape)
        offset += size
    return out


def save_safetensors(path, params: dict, metadata: dict | None = None):
    """Write float32 tensors as a .safetensors file, atomically (temp file + rename)."""
    header, offset, blobs = {}, 0, []
    for name, a in params.items():
        data = np.ascontiguousarray(a, dtype="<f4").tobytes()
        header[name] = {"dtype": "F32", "shape": list(np.shape(a)),
                        "data_offsets": [offset, offset + len(data)]}
        blobs.append(data)
        offset += len(data)
    if metadata:
        header["__metadata__"] = {str(k): str(v) for k, v in metadata.items()}
    head = json.dumps(header, separators=(",", ":")).encode()
    head += b" " * (-len(head) % 8)  # the format pads the header to 8 bytes
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "wb") as f:
        f.write(struct.pack("<Q", len(head)))
        f.write(head)
        for blob in blobs:
            f.write(blob)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def load_safetensors(path) -> dict:
    """Read a .safetensors file of F32 tensors; malformed files raise ValueError."""
    with open(path, "rb") as f:
        raw = f.read()
    if len(raw) < 8:
        raise ValueError(f"{path}: not a safetensors file (shorter than its 8-byte header length)")
    (n,) = struct.unpack("<Q", raw[:8])
    if 8 + n > len(raw):
        raise ValueError(f"{path}: truncated safetensors header")
    try:
        header = json.loads(raw[8:8 + n])
    except ValueError as e:
        raise ValueError(f"{path}: corrupt safetensors header ({e})") from None
    data = raw[8 + n:]
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        if info.get("dtype") != "F32":
            raise ValueError(f"{path}: tensor {name!r} is {info.get('dtype')}, only F32 is supported")
        start, end = info["data_offsets"]
        if end > len(data) or end - start != 4 * int(np.prod(info["shape"])):
            raise ValueError(f"{path}: tensor {name!r} data is truncated or mis-sized")
        out[name] = np.frombuffer(data[start:end], dtype="<f4").reshape(info["shape"]).copy()
    return out
