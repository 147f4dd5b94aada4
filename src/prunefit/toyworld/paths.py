"""Where the toy world's shipped assets live inside the installed package."""

from __future__ import annotations

from pathlib import Path

ASSETS = Path(__file__).resolve().parent / "assets"


def assets_dir() -> Path:
    """The shipped toy world's folder."""
    return ASSETS


def teacher_dir() -> Path:
    """The toy world's teacher pipeline folder."""
    return ASSETS / "teacher"


def judge_dir() -> Path:
    """The toy world's judge folder."""
    return ASSETS / "judge"


def prompts_dir() -> Path:
    """The toy world's prompt sets folder."""
    return ASSETS / "prompts"
