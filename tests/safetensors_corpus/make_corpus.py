#!/usr/bin/python3
"""make_corpus.py: writes the hostile safetensors corpus and its EXPECTED manifest.

Each file breaks exactly one rule of the format (or of our reader's limits); EXPECTED lists,
one line per file, "<filename>\t<substring the error message must contain>".
tests/test_safetensors.c opens every listed file and checks st_open fails with that message.

Deterministic (no randomness, no timestamps), standard library only. Run from anywhere:
    /usr/bin/python3 tests/safetensors_corpus/make_corpus.py
"""
import json
import os
import struct

HERE = os.path.dirname(os.path.abspath(__file__))


def st(header, data=b"", n=None):
    """A safetensors file: u64 little-endian header length (n overrides it), header, data.
    header is a str (written as UTF-8) or raw bytes."""
    if isinstance(header, str):
        header = header.encode("utf-8")
    return struct.pack("<Q", len(header) if n is None else n) + header + data


def entry(dtype="F32", shape=(2,), offsets=(0, 8)):
    """A header entry; shape and offsets may be given as non-lists to break the format."""
    lst = lambda v: list(v) if isinstance(v, tuple) else v
    return {"dtype": dtype, "shape": lst(shape), "data_offsets": lst(offsets)}


def js(obj):
    return json.dumps(obj, separators=(",", ":"))


DATA8 = bytes(range(8))

# (filename stem, file bytes, substring the error must contain)
CASES = [
    ("empty_file", b"", "file too short"),
    ("too_short", b"\x05\x00\x00", "file too short"),
    ("header_len_past_eof", st("{}", n=1000), "runs past the end of the file"),
    ("header_too_large", st("{}", n=200_000_000), "header too large"),
    ("header_len_u64_max", st("{}", n=2**64 - 1), "header too large"),
    ("empty_header", st(""), "invalid JSON header"),
    ("invalid_json", st('{"w":{"dtype":"F32","shape":[2],"data_offsets":[0,8]'),
     "invalid JSON header at line 1, column"),
    ("invalid_utf8", st(b'{"w\xff":' + js(entry()).encode() + b"}", DATA8),
     "invalid JSON header"),
    ("nul_in_header", st(b'{"w":' + js(entry()).encode() + b"}\x00  ", DATA8), "NUL byte"),
    ("nul_escape_in_name", st('{"a\\u0000b":' + js(entry()) + "}", DATA8),
     "invalid JSON header"),
    ("trailing_garbage", st('{"w":' + js(entry()) + "} x", DATA8), "end of file expected"),
    ("deep_nesting", st('{"__metadata__":' + "[" * 5000 + "]" * 5000 + "}"),
     "maximum parsing depth"),
    ("huge_integer", st(js({"w": entry()}).replace("[0,8]", "[0,99999999999999999999]"), DATA8),
     "too big integer"),
    ("header_not_object", st("[1, 2]"), "header is a list, not a JSON object"),
    ("entry_not_object", st('{"w": 5}'), "tensor 'w': entry is an integer, not an object"),
    ("missing_key", st(js({"w": {"dtype": "F32", "shape": [2]}}), DATA8),
     "tensor 'w': missing key 'data_offsets'"),
    ("extra_key", st(js({"w": dict(entry(), foo=1)}), DATA8), "tensor 'w': unexpected key 'foo'"),
    ("dtype_not_string", st(js({"w": entry(dtype=4)}), DATA8), "dtype must be a string"),
    ("unknown_dtype", st(js({"w": entry(dtype="F128")}), DATA8), "tensor 'w': unknown dtype 'F128'"),
    ("control_char_name", st(js({"bad\nname": entry(dtype="X")}), DATA8),
     "tensor 'bad\\x0aname': unknown dtype 'X'"),
    ("shape_not_list", st(js({"w": entry(shape=2)}), DATA8),
     "tensor 'w': shape must be a list"),
    ("shape_not_integers", st(js({"w": entry(shape=[2.0])}), DATA8),
     "shape must be a list of integers"),
    ("negative_dim", st(js({"w": entry(shape=[-2])}), DATA8), "tensor 'w': negative dim -2"),
    ("too_many_dims", st(js({"w": entry(shape=[1] * 9 + [2])}), DATA8), "too many dims"),
    ("numel_overflow", st(js({"w": entry(shape=[2**32, 2**32])}), DATA8),
     "overflows the element count"),
    ("nbytes_overflow", st(js({"w": entry(dtype="F64", shape=[2**62])}), DATA8),
     "overflows the byte size"),
    ("offsets_not_list", st(js({"w": entry(offsets=8)}), DATA8),
     "data_offsets must be a list of two integers"),
    ("offsets_wrong_length", st(js({"w": entry(offsets=[0, 4, 8])}), DATA8),
     "data_offsets must be a list of two integers"),
    ("offsets_not_integers", st(js({"w": entry(offsets=[0, 8.0])}), DATA8),
     "data_offsets must be a list of two integers"),
    ("offsets_negative", st(js({"w": entry(shape=[0], offsets=[-8, -8])}), DATA8),
     "must be non-negative"),
    ("end_before_begin", st(js({"w": entry(offsets=[8, 0])}), DATA8),
     "tensor 'w': data_offsets [8, 0]: end before begin"),
    ("offsets_out_of_range", st(js({"w": entry(offsets=[0, 16], shape=[4])}), DATA8),
     "tensor 'w': data_offsets [0, 16] out of range"),
    ("offsets_mismatch_shape",
     st(js({"blocks.0.attn.qkv.weight": entry(shape=[4, 4], offsets=[0, 12])}), bytes(12)),
     "tensor 'blocks.0.attn.qkv.weight': data_offsets [0, 12] do not match dtype F32 x shape "
     "[4, 4] (64 bytes)"),
    ("overlap", st(js({"a": entry(offsets=[0, 8]), "b": entry(offsets=[4, 12])}), bytes(12)),
     "overlap"),
    ("overlap_same_range", st(js({"a": entry(), "b": entry()}), DATA8), "overlap"),
    ("hole", st(js({"a": entry(offsets=[0, 8]), "b": entry(offsets=[12, 20])}), bytes(20)),
     "hole in the data buffer: bytes [8, 12) before tensor 'b'"),
    ("hole_at_start", st(js({"a": entry(offsets=[4, 12])}), bytes(12)),
     "hole in the data buffer: bytes [0, 4) before tensor 'a'"),
    ("trailing_bytes", st(js({"a": entry()}), bytes(12)),
     "hole in the data buffer: bytes [8, 12) after tensor 'a'"),
    ("data_without_tensors", st("{}", DATA8), "hole in the data buffer"),
    # json.dumps cannot write a duplicate key, so these are spelled out.
    ("duplicate_name", st('{"w":' + js(entry()) + ',"w":' + js(entry()) + "}", DATA8),
     "duplicate"),
    ("duplicate_key_in_entry",
     st('{"w":{"dtype":"F32","dtype":"F32","shape":[2],"data_offsets":[0,8]}}', DATA8),
     "duplicate"),
    ("duplicate_metadata",
     st('{"__metadata__":{"a":"1"},"__metadata__":{"a":"1"}}'), "duplicate"),
    ("metadata_not_string", st(js({"__metadata__": {"epoch": 3}})),
     "__metadata__ key 'epoch': value is an integer, not a string"),
    ("metadata_not_object", st(js({"__metadata__": "pt"})), "__metadata__ must be an object"),
]


def main():
    names = set()
    lines = []
    for stem, blob, want in CASES:
        assert stem not in names, stem
        assert "\t" not in want and "\n" not in want, stem
        names.add(stem)
        fname = stem + ".safetensors"
        with open(os.path.join(HERE, fname), "wb") as f:
            f.write(blob)
        lines.append(fname + "\t" + want + "\n")
    with open(os.path.join(HERE, "EXPECTED"), "w", encoding="utf-8", newline="\n") as f:
        f.writelines(lines)
    print("wrote %d files to %s" % (len(CASES), HERE))


if __name__ == "__main__":
    main()
