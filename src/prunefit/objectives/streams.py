"""The RNG streams of training: one id per kind of per-sample draw, so two kinds never share a draw.

Sample i of stream s under seed k is drawn from ``sample_generator(k, s, i)`` (``objectives/inputs.py``). The
values are part of every run's reproducibility (a changed id changes every draw of its stream), so they never
change; a new kind of draw takes a new id here.
"""

from __future__ import annotations

from enum import IntEnum


class Stream(IntEnum):
    LOWER = 0
    """The fine-tuning / lower-level denoising samples (finetune, bilevel lower and vartheta phases)."""
    THETA_LOWER = 1
    """bilevel paper/nested: the L_ft samples of theta's step (vartheta keeps LOWER)."""
    ESD = 11
    """ESD's concept rollouts and timesteps."""
    ADVUNLEARN = 17
    """AdvUnlearn's unlearning samples."""
    ATTACK_INIT = 18
    """AdvUnlearn's random attack initialisations."""
    ESD_RETAIN = 19
    """ESD's retain-prompt rollouts (``esd.retain_xt=own``)."""
    HELD_OUT = 99
    """The held-out validation samples (under seed + 1, from sample index 10**9)."""
