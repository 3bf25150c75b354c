"""``Grade``: what scoring one sample yields, shared by every grader type."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class Grade:
    """One sample's score: the reward, per-grader scores (multi), error flags and judge tokens."""

    reward: float
    sub_rewards: dict[str, float] = field(default_factory=dict)
    errors: dict[str, Any] = field(default_factory=dict)  # OpenAI's flag names (and *_details)
    token_usage: dict[str, int] = field(default_factory=dict)  # judge model -> tokens
