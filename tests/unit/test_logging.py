import io
import json
import logging
from collections.abc import Iterator
from typing import Any

import pytest
import structlog

from adapters.logging import configure_logging, get_logger, set_level


@pytest.fixture(autouse=True)
def _restore_logging() -> Iterator[None]:
    root = logging.getLogger()
    level = root.level
    yield
    # Only the handler configure_logging() installed: pytest keeps its own on the root logger.
    for handler in [h for h in root.handlers if type(h).__module__ == "adapters.logging"]:
        root.removeHandler(handler)
        handler.close()
    root.setLevel(level)
    structlog.reset_defaults()


@pytest.fixture
def stream() -> io.StringIO:
    buffer = io.StringIO()
    configure_logging("info", "auto", buffer)
    return buffer


def lines(stream: io.StringIO) -> list[dict[str, Any]]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def test_structlog_event_is_one_json_line_with_context(stream: io.StringIO) -> None:
    with structlog.contextvars.bound_contextvars(run_id="r1"):
        get_logger("cortexd.test").info("run started", nodes=3)

    [line] = lines(stream)
    assert line["event"] == "run started"
    assert line["level"] == "info"
    assert line["run_id"] == "r1"
    assert line["nodes"] == 3
    assert line["logger"] == "cortexd.test"
    assert line["timestamp"].endswith("Z")


def test_stdlib_loggers_come_out_as_json_too(stream: io.StringIO) -> None:
    with structlog.contextvars.bound_contextvars(request_id="q7"):
        logging.getLogger("aiohttp.access").info("GET %s %d", "/healthz", 200)

    [line] = lines(stream)
    assert line["event"] == "GET /healthz 200"
    assert line["logger"] == "aiohttp.access"
    assert line["level"] == "info"
    assert line["request_id"] == "q7"
    assert "timestamp" in line


def test_set_level_applies_live_to_structlog_and_stdlib(stream: io.StringIO) -> None:
    log = get_logger("cortexd.test")
    log.info("before")

    set_level("warning")
    log.info("hidden")
    logging.getLogger("langgraph").info("hidden too")
    log.warning("shown")

    assert [line["event"] for line in lines(stream)] == ["before", "shown"]


def test_debug_is_dropped_at_the_info_level(stream: io.StringIO) -> None:
    get_logger("cortexd.test").debug("noise")
    logging.getLogger("aiohttp.server").debug("noise")

    assert stream.getvalue() == ""


def test_configuring_twice_does_not_duplicate_lines(stream: io.StringIO) -> None:
    second = io.StringIO()
    configure_logging("info", "json", second)

    get_logger("cortexd.test").info("once")

    assert stream.getvalue() == ""
    assert [line["event"] for line in lines(second)] == ["once"]


def test_exceptions_are_structured_without_frame_locals(stream: io.StringIO) -> None:
    secret = "token-123"
    try:
        raise RuntimeError("node failed")
    except RuntimeError:
        get_logger("cortexd.test").exception("run failed", attempt=len(secret))

    [line] = lines(stream)
    [exc] = line["exception"]
    assert (exc["exc_type"], exc["exc_value"]) == ("RuntimeError", "node failed")
    assert secret not in stream.getvalue()


def test_console_format_is_human_readable() -> None:
    buffer = io.StringIO()
    configure_logging("info", "console", buffer)

    get_logger("cortexd.test").info("hello", run_id="r1")

    output = buffer.getvalue()
    assert "hello" in output
    assert "run_id=r1" in output
    assert not output.startswith("{")


def test_unknown_level_is_refused() -> None:
    with pytest.raises(ValueError, match="loud"):
        configure_logging("loud", "json", io.StringIO())
