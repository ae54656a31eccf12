"""Log lines are JSON objects; errors carry event_id and account_id; the level is honoured."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator

import pytest

from pipeline.logging import configure_logging


@pytest.fixture
def captured() -> Iterator[io.StringIO]:
    root = logging.getLogger()
    level = root.level
    stream = io.StringIO()
    configure_logging("info", stream)
    yield stream
    for handler in list(root.handlers):
        if handler.get_name() == "unmask-json":
            root.removeHandler(handler)
    root.setLevel(level)


def lines(stream: io.StringIO) -> list[dict[str, object]]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def test_every_line_is_a_json_object_with_the_standard_fields(captured: io.StringIO) -> None:
    logging.getLogger("pipeline.test").info("scored %d avatars", 3, extra={"stage": "avatar"})
    (line,) = lines(captured)
    assert line["message"] == "scored 3 avatars"
    assert line["level"] == "INFO" and line["logger"] == "pipeline.test"
    assert line["stage"] == "avatar"
    assert str(line["time"]).startswith("20")


def test_errors_carry_event_and_account_ids_and_the_traceback(captured: io.StringIO) -> None:
    log = logging.getLogger("pipeline.test")
    try:
        raise ValueError("bad envelope")
    except ValueError:
        log.exception("stage failed", extra={"event_id": "evt-1", "account_id": "acct-9"})
    log.error("no ids known")
    with_ids, without = lines(captured)
    assert with_ids["event_id"] == "evt-1" and with_ids["account_id"] == "acct-9"
    assert "ValueError: bad envelope" in str(with_ids["exc_info"])
    assert without["event_id"] is None and without["account_id"] is None


def test_level_from_settings_filters_lower_levels(captured: io.StringIO) -> None:
    configure_logging("WARNING", captured)
    log = logging.getLogger("pipeline.test")
    log.info("hidden")
    log.warning("shown")
    assert [line["message"] for line in lines(captured)] == ["shown"]
    assert sum(h.get_name() == "unmask-json" for h in logging.getLogger().handlers) == 1


def test_unknown_level_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown log level"):
        configure_logging("LOUD")
