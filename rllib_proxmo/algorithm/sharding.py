"""How learners split the work: whole task groups per learner, and the model itself.

RLlib's own episode sharding balances by episode length and cuts groups apart; the
advantage term and the token-mean loss need whole groups per shard, and balanced
token counts keep DDP learners in step. :data:`SHARDINGS` names how the learners hold
the model (``ProxMOConfig.learners(sharding=...)``; importable without torch, for the
command lines).
"""

from __future__ import annotations

from collections.abc import Sequence

from rllib_proxmo.rollout.episodes import TextEpisode

#: Values of ``sharding``: every learner holds the whole model (RLlib's DDP), or FSDP2 shards it over them.
SHARDINGS = ("ddp", "fsdp")
DEFAULT_SHARDING = "ddp"


def group_episodes(episodes: Sequence[TextEpisode]) -> dict[str, list[TextEpisode]]:
    """Episodes by ``group_id``, in first-seen order."""
    groups: dict[str, list[TextEpisode]] = {}
    for episode in episodes:
        groups.setdefault(episode.group_id, []).append(episode)
    return groups


def shard_by_group(episodes: Sequence[TextEpisode], num_shards: int) -> list[list[TextEpisode]]:
    """Assign whole groups to ``num_shards`` shards, balancing token counts.

    Greedy longest-first: groups sorted by token count (descending, ties by group
    id, so the result is deterministic) each go to the currently lightest shard.

    Raises:
        ValueError: If there are fewer groups than shards (a learner would get
            nothing and its DDP peers would wait for it forever).
    """
    if num_shards < 1:
        raise ValueError(f"num_shards must be >= 1, got {num_shards}")
    groups = group_episodes(episodes)
    if len(groups) < num_shards:
        raise ValueError(
            f"{len(groups)} task groups cannot feed {num_shards} learners: "
            "raise tasks_per_iteration or lower num_learners"
        )
    weight = {gid: sum(e.num_tokens for e in members) for gid, members in groups.items()}
    shards: list[list[TextEpisode]] = [[] for _ in range(num_shards)]
    load = [0] * num_shards
    for gid in sorted(groups, key=lambda g: (-weight[g], g)):
        lightest = min(range(num_shards), key=lambda s: (load[s], s))
        shards[lightest].extend(groups[gid])
        load[lightest] += weight[gid]
    return shards
