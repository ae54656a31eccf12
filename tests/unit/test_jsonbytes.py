"""pipeline.jsonbytes (orjson) writes the documents json.dumps writes, in compact form."""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime
from typing import Any

import pytest

from pipeline import jsonbytes

DOCS: list[Any] = [
    {"a": [1, 2.5, None, True], "b": 'q"\\', "c": "ünïcødé ✓ 漢字\ttab\u2028", "d": {}},
    [0.1, 1 / 3, 1e-300, 1.7976931348623157e308, -0.0, 12345.6789, 1e-5, 2**63 - 1, -(2**63)],
    {1: "int key", 2.5: "float key", False: "bool key", None: "null key"},
    "text",
    None,
    {"deep": [[[[{"x": [1]}]]]]},
]


@pytest.mark.parametrize("doc", DOCS)
def test_documents_decode_to_what_json_dumps_gives(doc: Any) -> None:
    fast = jsonbytes.dumps(doc)
    assert isinstance(fast, bytes)
    assert json.loads(fast) == json.loads(json.dumps(doc))
    assert jsonbytes.dumps_text(doc) == fast.decode()
    assert jsonbytes.loads(fast) == json.loads(json.dumps(doc))
    assert jsonbytes.loads(fast.decode()) == jsonbytes.loads(fast)


def test_compact_form() -> None:
    assert jsonbytes.dumps({"a": [1, "b"], "c": None}) == b'{"a":[1,"b"],"c":null}'


def test_what_orjson_refuses_falls_back_to_json() -> None:
    big = {"n": 2**70, "m": [-(2**80)]}
    assert jsonbytes.dumps(big) == json.dumps(big).encode()
    assert jsonbytes.dumps_text(big) == json.dumps(big)
    with pytest.raises(TypeError):
        jsonbytes.dumps({"x": object()})


def test_nan_becomes_null_and_datetimes_are_iso() -> None:
    assert json.loads(jsonbytes.dumps([math.nan, math.inf])) == [None, None]
    when = datetime(2026, 11, 30, 3, 0, tzinfo=UTC)
    assert json.loads(jsonbytes.dumps({"at": when})) == {"at": "2026-11-30T03:00:00+00:00"}


def test_decode_errors_are_value_errors() -> None:
    for raw in (b"{not json", b"\xff\xfe", b"", b"[1,]"):
        with pytest.raises(ValueError):
            jsonbytes.loads(raw)
