"""structlog and stdlib logging through one handler: JSON lines, or a console renderer on a TTY."""

import logging
import sys
from typing import Any, TextIO

import structlog
from aiohttp.abc import AbstractAccessLogger
from aiohttp.web import BaseRequest, Request, StreamResponse
from structlog.typing import EventDict, Processor

from adapters.http.request_id import HEADER as REQUEST_ID_HEADER

LEVELS = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "error": logging.ERROR,
}

# Loggers of libraries whose records must come out in our format, not through their own handlers.
ROUTED_LOGGERS = ("aiohttp.access", "aiohttp.server", "aiohttp.web", "langgraph")


class _Handler(logging.StreamHandler[TextIO]):
    """Marks the handler configure_logging() owns, so a second call replaces exactly it."""


def _level_number(level: str) -> int:
    try:
        return LEVELS[level.lower()]
    except KeyError:
        raise ValueError(f"unknown log level {level!r}; expected one of {sorted(LEVELS)}") from None


class _Fields:
    """Adds fixed fields to every line (the daemon's instance id), unless a line has its own."""

    def __init__(self, fields: dict[str, str]) -> None:
        self._fields = fields

    def __call__(self, logger: Any, name: str, event_dict: EventDict) -> EventDict:
        for key, value in self._fields.items():
            event_dict.setdefault(key, value)
        return event_dict


def _shared_processors(fields: dict[str, str]) -> list[Processor]:
    """Applied to structlog events and stdlib records alike, before rendering."""
    return [
        structlog.contextvars.merge_contextvars,
        _Fields(fields),
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True, key="timestamp"),
    ]


def _renderer_chain(fmt: str, stream: TextIO) -> list[Processor]:
    if fmt not in ("auto", "json", "console"):
        raise ValueError(f"unknown log format {fmt!r}; expected auto, json or console")
    is_tty = stream.isatty()
    if fmt == "console" or (fmt == "auto" and is_tty):
        # The console renderer formats exc_info itself, as a readable traceback.
        return [structlog.dev.ConsoleRenderer(colors=is_tty)]
    # Structured tracebacks, but without frame locals: those would leak tokens and run inputs.
    tracebacks = structlog.tracebacks.ExceptionDictTransformer(show_locals=False)
    return [
        structlog.processors.ExceptionRenderer(tracebacks),
        structlog.processors.JSONRenderer(),
    ]


def configure_logging(
    level: str = "info",
    fmt: str = "auto",
    stream: TextIO | None = None,
    instance: str | None = None,
) -> None:
    """Route structlog and stdlib logging to ``stream`` (stdout by default) in one format;
    every line names the daemon's ``instance`` when one is given.

    Safe to call again (e.g. on reload): the previous handler is replaced, never duplicated.
    """
    number = _level_number(level)
    stream = sys.stdout if stream is None else stream
    shared = _shared_processors({"instance": instance} if instance else {})
    structlog.configure(
        processors=[
            shared[0],
            # Checked against the stdlib logger's effective level, so set_level() applies live.
            structlog.stdlib.filter_by_level,
            *shared[1:],
            structlog.stdlib.PositionalArgumentsFormatter(),
            structlog.processors.StackInfoRenderer(),
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
        ],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        # Caching would pin a logger first used before this call to the previous configuration.
        cache_logger_on_first_use=False,
    )
    handler = _Handler(stream)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            # A stdlib record's `extra` fields become fields of the line (the access log's).
            foreign_pre_chain=[*shared, structlog.stdlib.ExtraAdder()],
            processors=[
                structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                *_renderer_chain(fmt, stream),
            ],
        )
    )
    root = logging.getLogger()
    for old in [h for h in root.handlers if isinstance(h, _Handler)]:
        root.removeHandler(old)
        old.close()
    root.addHandler(handler)
    for name in ROUTED_LOGGERS:
        routed = logging.getLogger(name)
        routed.propagate = True
        routed.setLevel(logging.NOTSET)
    root.setLevel(number)


class AccessLog(AbstractAccessLogger):
    """aiohttp's access log as one structured line per request, at info, through the stdlib
    logger aiohttp hands it (``aiohttp.access``). The request context is gone by the time aiohttp
    logs, so the request id is taken from the response, which echoes it."""

    def log(self, request: BaseRequest, response: StreamResponse, time: float) -> None:
        # A request aiohttp refused before routing (malformed, say) is a BaseRequest: no route.
        resource = request.match_info.route.resource if isinstance(request, Request) else None
        self.logger.info(
            "request",
            extra={
                "request_id": response.headers.get(REQUEST_ID_HEADER),
                "remote": request.remote,
                "method": request.method,
                # The path without its query string: a query may carry what should not be kept.
                "path": request.path,
                "route": resource.canonical if resource is not None else None,
                "status": response.status,
                "bytes": response.body_length,
                "duration_s": round(time, 6),
                "user_agent": request.headers.get("User-Agent"),
            },
        )

    @property
    def enabled(self) -> bool:
        return self.logger.isEnabledFor(logging.INFO)


def set_level(level: str) -> None:
    """Change the level live (SIGHUP): structlog filters on the stdlib level, so both follow."""
    logging.getLogger().setLevel(_level_number(level))


def get_logger(name: str | None = None) -> structlog.stdlib.BoundLogger:
    return structlog.stdlib.get_logger(name)
