"""llmctl.core: data pipelines, stages, artifacts, jobs, metrics, GPU sampling and the CLI.

Nothing here imports torch, datasets or textual at module level.
"""

__version__ = "0.1.0"
