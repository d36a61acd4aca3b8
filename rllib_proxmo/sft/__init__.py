"""Supervised warm start on expert demonstrations (``python -m rllib_proxmo.sft``)."""

from rllib_proxmo.sft.demonstrations import collect_demonstrations
from rllib_proxmo.sft.fine_tune import EpochStats, FineTuneSettings, fine_tune
from rllib_proxmo.sft.warm_start import WarmStartResult, warm_start

__all__ = [
    "EpochStats",
    "FineTuneSettings",
    "WarmStartResult",
    "collect_demonstrations",
    "fine_tune",
    "warm_start",
]
