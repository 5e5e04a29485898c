"""``python -m llmctl.core.cli``: the same as the ``llmctl`` command."""

from llmctl.core.cli import main

main()
