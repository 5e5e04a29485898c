"""Rewards: the answer verifier, math equivalence, InternBootcamp task verifiers and verl's ``compute_score``."""
