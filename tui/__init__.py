"""llmctl.tui: the Textual control center."""
