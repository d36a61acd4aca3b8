"""Per-iteration episode metrics (success, length, format validity, per task type)."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence

import numpy as np

from rllib_proxmo.rollout.episodes import TextEpisode


def episode_metrics(episodes: Sequence[TextEpisode]) -> dict[str, float]:
    """Flat metrics over finished episodes.

    Keys: ``num_episodes``, ``num_turns``, ``success_rate``, ``score_mean`` (mean
    episode score: the env's reported ``TextEpisode.score`` where there is one, e.g.
    WebShop's purchase score whatever its reward mode, else the episode return),
    ``episode_len_mean`` (turns),
    ``truncated_rate``, ``format_valid_rate``, ``admissible_action_rate``,
    ``action_repaired_rate`` (commands admissible only after the wrapper's repair of a
    list prefix, trailing full stop or quotes) and
    ``response_cut_rate`` (responses cut at ``max_new_tokens`` before a stop token)
    over turns, and ``success_rate/<task_type>`` and ``num_episodes/<task_type>`` for each
    task type present.
    """
    if not episodes:
        return {"num_episodes": 0.0, "num_turns": 0.0}
    turns = [turn for episode in episodes for turn in episode.turns]
    metrics = {
        "num_episodes": float(len(episodes)),
        "num_turns": float(len(turns)),
        "success_rate": float(np.mean([e.won for e in episodes])),
        "score_mean": float(np.mean([e.total_reward if e.score is None else e.score for e in episodes])),
        "episode_len_mean": float(np.mean([len(e) for e in episodes])),
        "truncated_rate": float(np.mean([e.truncated for e in episodes])),
        "format_valid_rate": float(np.mean([t.format_valid for t in turns])) if turns else 0.0,
        "admissible_action_rate": float(np.mean([t.action_admissible for t in turns])) if turns else 0.0,
        "action_repaired_rate": float(np.mean([t.action_repaired for t in turns])) if turns else 0.0,
        "response_cut_rate": float(np.mean([t.cut for t in turns])) if turns else 0.0,
    }
    by_type: dict[str, list[bool]] = defaultdict(list)
    for episode in episodes:
        if episode.task_type:
            by_type[episode.task_type].append(episode.won)
    for task_type, wins in sorted(by_type.items()):
        metrics[f"success_rate/{task_type}"] = float(np.mean(wins))
        metrics[f"num_episodes/{task_type}"] = float(len(wins))
    return metrics
