"""RLlib's learner group for learners that hold shards of the module (``sharding="fsdp"``).

RLlib asks one learner for the group's state (``get_state``, ``save_to_path``: the first
healthy one) and waits for every learner's update before it looks at any result. With
sharded learners both are traps: gathering the shards is a collective, so the learner
asked waits forever for its peers, and a learner whose update raises leaves its peers
blocked in a collective, so RLlib's wait never ends. This group

- has every other learner take part in the gathering while the one RLlib asks runs
  ``get_state`` (:meth:`ProxMOTorchLearner.take_part_in_get_state`; only the asked one keeps
  the full state), and
- collects update results as they arrive and raises the first error at once, with the
  learner's message and traceback. The other learners stay blocked until the group is
  shut down (``algo.stop()``, bounded by Ray Train's shutdown timeouts): a failed group
  is not reused.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import ray
from ray.rllib.core import COMPONENT_LEARNER
from ray.rllib.core.learner.learner_group import LearnerGroup
from ray.rllib.core.learner.training_data import TrainingData
from ray.rllib.utils.typing import StateDict

_UPDATE = "proxmo_sharded_update"
_GATHER = "proxmo_sharded_gather"
#: Seconds between checks for finished learner calls.
_POLL_S = 0.5


class ShardedLearnerGroup(LearnerGroup):
    """A remote learner group whose learners gather state together and whose failures surface at once."""

    def get_state(self, components: Any = None, *, not_components: Any = None, **kwargs: Any) -> StateDict:
        if not self._check_component(COMPONENT_LEARNER, components, not_components):
            return super().get_state(components, not_components=not_components, **kwargs)
        peer_args = (self._get_subcomponents(COMPONENT_LEARNER, components),)
        peer_kwargs = {"not_components": self._get_subcomponents(COMPONENT_LEARNER, not_components), **kwargs}
        with self._peers_gathering(peer_args, peer_kwargs):
            return super().get_state(components, not_components=not_components, **kwargs)

    def save_to_path(self, path: Any = None, *, state: StateDict | None = None, **kwargs: Any) -> str:
        """RLlib's save; without a ``state`` the learner that writes gathers it with the others' help."""
        if state is not None:
            return super().save_to_path(path, state=state, **kwargs)
        # RLlib has the first healthy learner write ``w.get_state()``: the peers run the same call.
        with self._peers_gathering((), {}):
            return super().save_to_path(path, **kwargs)

    def update(self, *, episodes_refs: list[ray.ObjectRef], timesteps: dict | None = None, **kwargs: Any) -> list:
        """One update on every learner from its share of ``episodes_refs``; the first learner error is raised.

        Returns:
            The learners' results (in the order they finished), as ``LearnerGroup.update``.
        """
        shards = TrainingData(episodes_refs=episodes_refs).shard(
            num_shards=len(self), len_lookback_buffer=self.config.episode_lookback_horizon, **kwargs
        )
        calls = [dict(training_data=data, timesteps=timesteps, **extra, **kwargs) for data, extra in shards]
        self._worker_manager.foreach_actor_async("update", tag=_UPDATE, kwargs=calls)
        return self._collect(_UPDATE, len(calls))

    @contextlib.contextmanager
    def _peers_gathering(self, args: tuple, kwargs: dict[str, Any]) -> Iterator[None]:
        """Every healthy learner but the first runs ``take_part_in_get_state(*args, **kwargs)`` meanwhile."""
        peers = self._worker_manager.healthy_actor_ids()[1:]
        self._worker_manager.foreach_actor_async(
            lambda learner: learner.take_part_in_get_state(*args, **kwargs), tag=_GATHER, remote_actor_ids=peers
        )
        yield
        self._collect(_GATHER, len(peers))

    def _collect(self, tag: str, count: int) -> list:
        """The results of ``count`` calls tagged ``tag``, as they finish; a failed call raises its error."""
        results: list = []
        while len(results) < count:
            for result in self._worker_manager.fetch_ready_async_reqs(tags=tag, timeout_seconds=_POLL_S):
                if not result.ok:
                    raise result.get()
                results.append(result.get())
        return results
