"""Data pipelines: sources (hub ids and local files), the chat template, packing, and the four prepare stages."""
