"""Where the toy world's shipped assets live inside the installed package."""

from __future__ import annotations

from pathlib import Path

ASSETS = Path(__file__).resolve().parent / "assets"


def assets_dir() -> Path:
    return ASSETS


def teacher_dir() -> Path:
    return ASSETS / "teacher"


def judge_dir() -> Path:
    return ASSETS / "judge"


def prompts_dir() -> Path:
    return ASSETS / "prompts"
