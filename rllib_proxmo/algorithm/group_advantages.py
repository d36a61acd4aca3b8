"""Per-step advantages of whole task groups (ProxMO, GRPO, GiGPO, ablations).

This driver-side step flattens the turns of all given episodes into the step arrays of
:func:`rllib_proxmo.advantages.compute_advantages_with_diagnostics` (raw state text
from ``info["state"]``, success from ``info["won"]``, the invalid-action penalty
from ``Turn.penalty``, applied to its own step only), writes each step's scalar
advantage into ``Turn.advantage`` and logs the core's diagnostics.

It must see whole groups *and the whole batch*: the episode term normalises within
a group, and PSA's TF-IDF vocabulary is fitted on every state of the batch. ProxMO
therefore runs it once on the driver over the complete iteration batch, before the
episodes are sharded across learners, so advantages do not depend on the number of
learners.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from rllib_proxmo.advantages import AdvantageConfig, compute_advantages_with_diagnostics
from rllib_proxmo.rollout.episodes import TextEpisode, step_columns


class GroupAdvantages:
    """Fill ``Turn.advantage`` for every turn of the given episodes.

    Args:
        config: The estimator and its hyperparameters (``ProxMOConfig.advantage_config``).
    """

    def __init__(self, config: AdvantageConfig) -> None:
        if not isinstance(config, AdvantageConfig):
            raise TypeError(f"GroupAdvantages needs an AdvantageConfig, got {type(config).__name__}")
        self.config = config

    def annotate(self, episodes: Sequence[TextEpisode]) -> dict[str, float]:
        """Write advantages into the episodes' turns; return the core's diagnostics."""
        columns = step_columns(episodes)
        advantages, diagnostics = compute_advantages_with_diagnostics(
            columns["group_id"],
            columns["episode_id"],
            columns["t"],
            columns["reward"],
            columns["state"],
            columns["success"],
            self.config,
            penalty=columns["penalty"],
        )
        if not np.all(np.isfinite(advantages)):
            raise ValueError(f"estimator {self.config.estimator!r} produced non-finite advantages")
        rows = iter(advantages.tolist())
        for episode in episodes:
            for turn in episode.turns:
                turn.advantage = next(rows)
        return diagnostics
