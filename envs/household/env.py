"""The household tasks as a Gymnasium text env that an LLM agent plays (``Household-v0``).

Each task id seeds one house and task (:func:`envs.household.mdp.sample_task`), so a task id names
the same task on every machine. Observations are the MDP's rendered texts ``s_t`` (what
:func:`~envs.household.mdp.render_episode` gives for the same trajectory), the task sentence is in
``info["task"]``, commands are the admissible commands' texts, e.g. ``"go to the kitchen"`` or
``"take the mug 1 from the table 1"``. A command that is not admissible prints "Nothing happens.",
changes nothing and counts as a step, as in ALFWorld. ``put`` at the receptacle pays 1 and ends the
episode; after ``max_steps`` steps it is truncated. The latent MDP with its exact values stays
reachable as ``env.unwrapped.mdp`` and the latent state index as ``info["latent_state"]``.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np

from envs.household.mdp import EpisodeRenderer, HouseMDP, sample_task
from envs.spaces import TextSpace

__all__ = ["HouseholdEnv"]

NOTHING_HAPPENS = "Nothing happens."


class HouseholdEnv(gym.Env[str, str]):
    """Put (and heat, cool or clean) an object in a small house described in text.

    Args:
        n_rooms: rooms per house, 3 to 10.
        max_steps: steps before truncation, >= 1.
        noise: lexical noise of the observations in [0, 1] (0: a latent state always reads the same).

    ``reset(options={"task_id": k})`` plays task k (an int >= 0); without it the task id is drawn
    from the env's seeded generator. ``info`` holds ``admissible_actions``, ``task``, ``state`` (the
    observation), ``won``, ``task_id``, ``task_type`` (``"pick"``, ``"heat"``, ``"cool"`` or
    ``"clean"``), ``step`` and ``latent_state``.
    """

    metadata: dict[str, Any] = {"render_modes": []}
    #: A command that changes nothing but counts as a step (any inadmissible command does).
    noop_action = ""
    #: Prompt used by :class:`envs.llm_wrappers.PromptWrapper` (the game reads like ALFWorld).
    prompt_template = "alfworld"

    def __init__(self, n_rooms: int = 6, max_steps: int = 15, noise: float = 0.0) -> None:
        if isinstance(max_steps, bool) or not isinstance(max_steps, int) or max_steps < 1:
            raise ValueError(f"max_steps must be an int >= 1, got {max_steps!r}")
        if not 0.0 <= noise <= 1.0:
            raise ValueError(f"noise must be in [0, 1], got {noise!r}")
        sample_task(np.random.default_rng(0), n_rooms)  # refuses a bad n_rooms now rather than on reset
        self.n_rooms, self.max_steps, self.noise = n_rooms, max_steps, noise
        self.observation_space = TextSpace()
        self.action_space = TextSpace()
        self.mdp: HouseMDP | None = None
        self._renderer: EpisodeRenderer | None = None
        self._state = -1
        self._task_id = -1
        self._steps = 0
        self._done = True

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[str, dict[str, Any]]:
        super().reset(seed=seed)
        task_id = (options or {}).get("task_id")
        if task_id is None:
            task_id = int(self.np_random.integers(2**31))
        if isinstance(task_id, bool) or not isinstance(task_id, (int, np.integer)) or task_id < 0:
            raise ValueError(f"task_id must be an int >= 0, got {task_id!r}")
        if self.mdp is None or int(task_id) != self._task_id:  # a group's resets replay one task: build it once
            self._task_id = int(task_id)
            self.mdp = HouseMDP(sample_task(np.random.default_rng(self._task_id), self.n_rooms))
        self._renderer = EpisodeRenderer(self.mdp, self.noise, self.np_random)
        self._state, self._steps, self._done = self.mdp.start_state, 0, False
        obs = self._renderer.observation(self._state, None)
        return obs, self._info(obs)

    def admissible_actions(self) -> list[str]:
        """The texts of the commands admissible now (none once the episode is over)."""
        if self._done:
            return []
        return [self._renderer.command(command)[0] for command in self.mdp.commands[self._state]]

    def step(self, action: str) -> tuple[str, float, bool, bool, dict[str, Any]]:
        if self._done:
            raise ValueError("the household episode is over (or never started); call reset()")
        self._steps += 1
        admissible = self.admissible_actions()
        reward = 0.0
        if action not in admissible:
            obs = NOTHING_HAPPENS
        else:
            command = self.mdp.commands[self._state][admissible.index(action)]
            feedback = self._renderer.command(command)[1]
            reward, self._state = command.reward, command.next_state
            won = self._state == self.mdp.success_state
            obs = feedback if won else self._renderer.observation(self._state, feedback)
        terminated = self._state == self.mdp.success_state
        truncated = not terminated and self._steps >= self.max_steps
        self._done = terminated or truncated
        return obs, reward, terminated, truncated, self._info(obs)

    def _info(self, obs: str) -> dict[str, Any]:
        task = self.mdp.task
        return {
            "admissible_actions": self.admissible_actions(),
            "task": task.description,
            "state": obs,
            "won": self._state == self.mdp.success_state,
            "task_id": self._task_id,
            "task_type": task.process or "pick",
            "step": self._steps,
            "latent_state": self._state,
        }
