"""CLI subcommands, one module each.

Every module here defines ``NAME`` (the subcommand, e.g. ``"triangulate"``),
``HELP`` (one line), ``add_arguments(parser)`` and ``run(args) -> int``.
``engine.cli`` discovers them, so adding a command never touches a shared file.
"""
