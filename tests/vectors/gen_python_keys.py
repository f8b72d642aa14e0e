#!/usr/bin/env python3
"""Generate test vectors for the Rust port of the seed's idempotency key.

Usage (from the repository root):

    python3 tests/vectors/gen_python_keys.py > tests/vectors/python_keys.json

Each vector is {"entity_id", "action", "params", "key", "float_bits"}.
`params` is null when the Python function was called without params. Floats
are written with json.dumps, which uses repr, so they stay floats (100.0, not
100) when the Rust test parses them with serde_json.

serde_json's default float parser (without the `float_roundtrip` feature) is
not always correctly rounded and can land one ULP away from the value Python
hashed. `float_bits` therefore lists the exact IEEE-754 bit pattern (16 hex
digits) of every float in `params`, in the order a sorted-key depth-first walk
visits them, and the Rust test substitutes these exact values.
"""

import hashlib
import json
import random
import struct
import sys


def generate_idempotency_key(*, entity_id: str, action: str, params: dict | None = None) -> str:
    content = f"{entity_id}:{action}"
    if params:
        content += f":{json.dumps(params, sort_keys=True)}"
    return hashlib.sha256(content.encode()).hexdigest()[:32]


NO_PARAMS = object()

CASES = [
    # (entity_id, action, params)
    ("order-123", "create", NO_PARAMS),
    ("order-123", "create", None),
    ("", "", NO_PARAMS),
    ("order-123", "create", {}),
    ("order-123", "create", []),
    ("order-123", "create", ""),
    ("order-123", "create", 0),
    ("order-123", "create", 0.0),
    ("order-123", "create", -0.0),
    ("order-123", "create", False),
    # Seed example.
    ("order-123", "create", {"amount": 100, "currency": "USD"}),
    ("order-123", "create", {"currency": "USD", "amount": 100.0}),
    ("user-1", "update", {"name": "Alice", "age": 30, "active": True}),
    # Truthy non-dict params.
    ("e", "a", True),
    ("e", "a", 1),
    ("e", "a", -1),
    ("e", "a", 0.5),
    ("e", "a", "text"),
    ("e", "a", " "),
    ("e", "a", [0]),
    ("e", "a", [None]),
    ("e", "a", {"": None}),
    # Nested objects with unsorted keys at several levels.
    ("nested", "deep", {
        "zeta": {"b": 2, "a": 1, "c": {"y": [3, 2, 1], "x": {"q": 1, "p": 0}}},
        "alpha": [{"d": 4, "c": 3}, {"b": {"z": None, "a": True}}],
        "mid": {},
        "empty_list": [],
    }),
    # Arrays of mixed types.
    ("mixed", "array", {"items": [1, -2, 3.5, "four", None, True, False, [], {}, [1, [2, [3]]], {"k": "v"}]}),
    ("mixed", "top-level-array", [1, "two", 3.0, None, {"b": 1, "a": 2}]),
    # Unicode in keys and values.
    ("unicode", "values", {"fr": "café", "zh": "中文", "emoji": "😀", "combining": "e\u0301", "mixed": "a中😀\u0301z"}),
    ("unicode", "keys", {"é": 1, "中文": 2, "😀": 3, "e\u0301": 4, "\uffff": 5, "\U0010ffff": 6}),
    ("commande-é", "créer", {"amount": 1}),
    ("订单-中文", "创建😀", {"x": "y"}),
    ("😀", "e\u0301", NO_PARAMS),
    # Control characters and special characters.
    ("ctrl", "chars", {"nul": "\x00", "soh": "\x01", "us": "\x1f", "del": "\x7f", "ls": "\u2028", "ps": "\u2029", "c1": "\x80\x9f\xa0"}),
    ("ctrl", "short-escapes", {"s": "\b\f\n\r\t", "k\n": "\x0b"}),
    ("quotes", "backslashes", {"q": "say \"hi\"", "b": "C:\\path\\to", "both": "\\\"", "slash": "a/b", "\"key\"": "\\"}),
    ("printable", "ascii", {"all": "".join(chr(c) for c in range(0x20, 0x7f))}),
    ("all", "low", {"all": "".join(chr(c) for c in range(0x00, 0x20))}),
    ("entity:with:colons", "act:ion", {"a": "b:c"}),
    ("ctrl\x00\x7f", "act\n", {"v": 1}),
    # Floats.
    ("float", "tiny", {"v": 1e-05}),
    ("float", "tiny7", {"v": 1e-07}),
    ("float", "small", {"v": 0.0001}),
    ("float", "1e16", {"v": 1e16}),
    ("float", "1e22", {"v": 1e22}),
    ("float", "1.5e300", {"v": 1.5e300}),
    ("float", "denormal", {"v": 5e-324}),
    ("float", "max", {"v": 1.7976931348623157e308}),
    ("float", "-max", {"v": -1.7976931348623157e308}),
    ("float", "100.0", {"v": 100.0}),
    ("float", "-0.0", {"v": -0.0}),
    ("float", "0.0", {"v": 0.0}),
    ("float", "0.1", {"v": 0.1}),
    ("float", "third", {"v": 1 / 3}),
    ("float", "15.1", {"v": 123456789012345.6}),
    ("float", "16.0", {"v": 1234567890123456.0}),
    ("float", "17.0", {"v": 12345678901234567.0}),
    ("float", "2.5e-5", {"v": 2.5e-5}),
    ("float", "1e15", {"v": 1e15}),
    ("float", "9.99e15", {"v": 9999999999999998.0}),
    ("float", "0.00012", {"v": 0.00012}),
    # Exact ties between two equally short digit strings: repr rounds half
    # to even (…60.625 -> …60.62, …60.375 -> …60.38).
    ("float", "ties", {"v": [72389254100960.625, 72389254100960.375, 9088455535215.0625, 1486462385923773.25, -30452248614633.5625]}),
    ("float", "many", {"v": [0.1 + 0.2, 2.0 ** 53, 2.0 ** 53 + 2, 2.0 ** -1074, 2.2250738585072014e-308, -1.5, 1e100, 123.456, 1e-4, 9.5e-5]}),
    # Integer extremes.
    ("int", "i64-min", {"v": -9223372036854775808}),
    ("int", "i64-max", {"v": 9223372036854775807}),
    ("int", "u64-max", {"v": 18446744073709551615}),
    ("int", "mixed", {"v": [0, -1, 1, 2 ** 53, 2 ** 53 + 1, -(2 ** 63), 2 ** 63]}),
    # Bools and nulls inside objects.
    ("bools", "nulls", {"t": True, "f": False, "n": None, "list": [True, False, None]}),
    # Key ordering by code point.
    ("order", "keys", {"a": 1, "B": 2, "é": 3, "Z": 4, "_": 5, "10": 6, "9": 7, "": 8, " ": 9, "~": 10, "\x7f": 11, "ab": 12, "a\x00": 13, "😀": 14, "\uffff": 15, "ｚ": 16}),
    ("order", "nested-keys", {"b": {"é": 1, "e": 2, "E": 3}, "a": [{"9": 1, "10": 2}]}),
]


def random_cases(seed: int, count: int):
    rng = random.Random(seed)
    cases = []
    for i in range(count):
        kind = i % 4
        if kind == 0:
            # Random bit patterns: exercises shortest-repr digit generation.
            while True:
                bits = rng.getrandbits(64)
                v = struct.unpack("<d", bits.to_bytes(8, "little"))[0]
                if v == v and v not in (float("inf"), float("-inf")):
                    break
        elif kind == 1:
            v = rng.uniform(-1e6, 1e6)
        elif kind == 2:
            v = rng.random() * 10.0 ** rng.randint(-30, 30)
        else:
            # Large values with few fractional bits: often exact ties.
            v = float(rng.randint(-10 ** 18, 10 ** 18)) * 10.0 ** rng.randint(-6, 3)
        cases.append(("random-float", str(i), {"v": v}))
    return cases


def float_bits(value, out):
    """Collect float bit patterns in sorted-key depth-first order."""
    if isinstance(value, float):
        out.append(struct.pack(">d", value).hex())
    elif isinstance(value, list):
        for item in value:
            float_bits(item, out)
    elif isinstance(value, dict):
        for key in sorted(value):
            float_bits(value[key], out)
    return out


def main() -> None:
    vectors = []
    for entity_id, action, params in CASES + random_cases(20240601, 120):
        if params is NO_PARAMS:
            key = generate_idempotency_key(entity_id=entity_id, action=action)
            params = None
        else:
            key = generate_idempotency_key(entity_id=entity_id, action=action, params=params)
        vectors.append({
            "entity_id": entity_id,
            "action": action,
            "params": params,
            "key": key,
            "float_bits": float_bits(params, []),
        })
    json.dump(vectors, sys.stdout, indent=1, allow_nan=False)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
