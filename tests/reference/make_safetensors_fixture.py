#!/usr/bin/python3
"""A safetensors file written by another implementation, for tests/test_checkpoint.cpp.

The Python `safetensors` package is not installable here, so this follows the format's spec
(https://huggingface.co/docs/safetensors, "Format") independently of moegrad, with struct + json:
  8 bytes   little-endian u64 N, the header size
  N bytes   UTF-8 JSON {"__metadata__": {str: str}, name: {"dtype", "shape", "data_offsets"}},
            padded with spaces so that 8 + N is a multiple of 8
  rest      the tensors' little-endian, row-major bytes; data_offsets are relative to here
Like the reference writer, the data is laid out by dtype (widest first), then by name,
while the header lists the keys alphabetically, so the header's order is not the data's order.
Python's json writes ", " and ": " separators, unlike moegrad's compact header: readers must not
care. Plain Python (no torch) so the bytes do not depend on a library version.

Run:  /usr/bin/python3 tests/reference/make_safetensors_fixture.py
Writes tests/reference/fixture.safetensors. The values are repeated in test_checkpoint.cpp.
"""
import json
import math
import os
import struct

FORMATS = {"F64": ("d", 8), "F32": ("f", 4), "I32": ("i", 4)}

# name -> (dtype, shape, row-major values)
TENSORS = {
    "weight": ("F32", [2, 3], [0.1, -1.5, 2.0 ** -149, -0.0, math.inf, 3.4028234663852886e38]),
    "bias": ("F64", [3], [1e-300, -2.5, 1.0 / 3.0]),
    "scale": ("F64", [], [math.pi]),  # 0-d: one element
    "ids": ("I32", [2, 2], [-(2 ** 31), -1, 0, 2 ** 31 - 1]),
    "empty": ("F32", [0, 3], []),
}
METADATA = {"format": "pt", "producer": "make_safetensors_fixture.py"}


def main():
    order = sorted(TENSORS, key=lambda n: (-FORMATS[TENSORS[n][0]][1], n))
    offsets, data, pos = {}, b"", 0
    for name in order:
        dtype, shape, values = TENSORS[name]
        code, size = FORMATS[dtype]
        assert len(values) == math.prod(shape)
        blob = struct.pack("<%d%s" % (len(values), code), *values)
        offsets[name] = [pos, pos + len(blob)]
        data += blob
        pos += len(blob)

    header = {"__metadata__": METADATA}
    for name in sorted(TENSORS):
        dtype, shape, _ = TENSORS[name]
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": offsets[name]}
    text = json.dumps(header).encode("utf-8")
    text += b" " * (-(8 + len(text)) % 8)

    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fixture.safetensors")
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)) + text + data)
    print("wrote %s (%d bytes)" % (path, 8 + len(text) + len(data)))


if __name__ == "__main__":
    main()
