"""Built-in plugins, registered through the same path as third-party ones."""

BUILTINS: tuple[str, ...] = (
    "plugins.basic",
    "plugins.transform",
    "plugins.approval",
    "plugins.subworkflow",
    "plugins.http_request",
    "plugins.sinks",
    "plugins.webhook",
)
