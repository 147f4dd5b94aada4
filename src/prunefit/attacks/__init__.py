"""Prompt attacks that measure how much of an erased concept an attacker can still get out of a model."""
