"""The ``llmctl`` command line (Typer): the composition root. With no command it opens the control center.

One module per command group registers its commands on :data:`llmctl.core.cli.common.app` when
imported: ``root`` (the app, ``init``, ``status``), ``stage_commands`` (``prepare …``/``run …`` from
the stage declarations), ``jobs``, ``model`` (eval, sample, export), ``tools`` (gpus, preview),
``verl``, ``pipeline`` (demo, report) and ``clean``. Heavy libraries are imported inside commands only, so
``llmctl --help`` stays fast.
"""

from __future__ import annotations

# isort: off
# Importing a command module registers its commands; this order is the order of ``llmctl --help``.
from llmctl.core.cli import root, stage_commands  # noqa: F401
from llmctl.core.cli import jobs, verl, model, tools, pipeline, clean  # noqa: F401
# isort: on
from llmctl.core.cli.common import app
from llmctl.core.cli.stage_commands import execute_stage

__all__ = ["app", "execute_stage", "main"]


def main() -> None:
    """Console-script entry point."""
    app()
