"""Screens of the control center."""
