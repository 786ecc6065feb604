"""Test double of comfy.utils.load_torch_file: chooses the format by extension like ComfyUI, and
really parses safetensors from disk (header length, JSON header, offsets checked against the file)."""

import hashlib
import json
import struct

#: (path, sha256 of the file) of every load, for tests.
LOADS = []


def load_torch_file(ckpt, safe_load=False, device=None, return_metadata=False):
    if not (ckpt.lower().endswith(".safetensors") or ckpt.lower().endswith(".sft")):
        raise RuntimeError("test double: torch.load of %s refused (no pickles here)" % ckpt)
    with open(ckpt, "rb") as f:
        data = f.read()
    if len(data) < 8:
        raise ValueError("safetensors: file too short")
    (length,) = struct.unpack("<Q", data[:8])
    if 8 + length > len(data):
        raise ValueError("safetensors: header length past the end of the file")
    header = json.loads(data[8 : 8 + length].decode("utf-8"))
    metadata = header.pop("__metadata__", None)
    body = data[8 + length :]
    tensors = {}
    for name, info in header.items():
        start, end = info["data_offsets"]
        if not 0 <= start <= end <= len(body):
            raise ValueError("safetensors: tensor %s out of bounds" % name)
        tensors[name] = body[start:end]
    LOADS.append((ckpt, hashlib.sha256(data).hexdigest()))
    return (tensors, metadata) if return_metadata else tensors
