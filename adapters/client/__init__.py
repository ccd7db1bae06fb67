"""The `cortexd` command line as an HTTP client of the daemon.

Nothing here imports the daemon's engine, LangGraph or aiohttp: the client talks HTTP through
the standard library so that every client command starts in a fraction of a second.
"""
