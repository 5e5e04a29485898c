"""Widgets of the control center."""
