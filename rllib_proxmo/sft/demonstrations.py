"""Expert demonstrations, tokenised exactly as the env runner samples.

An expert env reports the next expert command in ``info["expert_action"]``
(ALFWorld with ``expert="search"`` or ``"oracle"``; any env may set it; None once no command is left).
:func:`collect_demonstrations` plays the LLM-facing env (the same prompt wrapper,
template and chat encoding as the env runner) and records one :class:`Turn` per
step: the prompt's ids and the expert command written as the response the prompt
asks for (:func:`envs.llm_wrappers.format_response`). With probability
``detour_prob`` a step executes a random listed action instead of the expert's, so
that later steps show the expert recovering from states off its own path; the
recorded response is the expert's either way.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import Any

import gymnasium as gym
import numpy as np
from transformers import PreTrainedTokenizerBase

from envs.llm_wrappers import EXPERT_ACTION, format_response
from envs.prompts import listed_actions
from rllib_proxmo.rollout.chat import prompt_ids, response_ids
from rllib_proxmo.rollout.episodes import TextEpisode, Turn


def _expert_command(info: dict[str, Any], env: gym.Env) -> str | None:
    if EXPERT_ACTION not in info:
        raise ValueError(
            f"{env.unwrapped!r} reports no info[{EXPERT_ACTION!r}]: supervised warm-up needs an expert "
            "(ALFWorld: env_config {'expert': 'search'}; a custom env: set info['expert_action'])"
        )
    command = info[EXPERT_ACTION]
    if command is not None and not isinstance(command, str):
        raise ValueError(f"info[{EXPERT_ACTION!r}] must be a str or None, got {command!r:.100}")
    return command


def demonstration_turn(tokenizer: PreTrainedTokenizerBase, prompt: tuple[int, ...], answer: str, state: str) -> Turn:
    """A supervised turn: the prompt's ids, ``answer`` tokenised as the response, ``advantage=1.0``
    (so the token batch's response mask is the loss mask)."""
    return Turn(prompt_ids=prompt, response_ids=response_ids(tokenizer, answer), reward=0.0, state=state, advantage=1.0)


def play_expert_episode(
    env: gym.Env,
    tokenizer: PreTrainedTokenizerBase,
    *,
    task_id: Any,
    seed: int,
    detour_prob: float,
    rng: np.random.Generator,
    max_turns: int | None = None,
    system_prompt: str | None = None,
) -> TextEpisode:
    """One episode of the expert (with detours) on ``task_id``, as training turns.

    Every turn carries ``advantage=1.0``, so the turns form a token batch
    (:func:`rllib_proxmo.algorithm.token_batch.pad_turns`) whose response mask is
    the supervised loss mask. ``episode.won`` tells whether the episode ended in
    success (detours can make it fail within ``max_turns``). The prompts are sent with
    ``system_prompt`` (:func:`~rllib_proxmo.rollout.chat.prompt_ids`), as the env runner
    sends the policy's.
    """
    template = env.get_wrapper_attr("template")
    require_think = env.get_wrapper_attr("require_think")
    prompt, info = env.reset(seed=seed, options=None if task_id is None else {"task_id": task_id})
    episode = TextEpisode(
        episode_id=uuid.uuid4().hex,
        group_id=uuid.uuid4().hex,
        task_id=str(info["task_id"]),
        task_type=str(info.get("task_type", "")),
    )
    while max_turns is None or len(episode.turns) < max_turns:
        command = _expert_command(info, env)
        if command is None:
            break
        admissible = list(info["admissible_actions"])
        listed = listed_actions(admissible, template.hidden_actions)
        executed = command
        if listed and rng.random() < detour_prob:
            executed = listed[int(rng.integers(len(listed)))]
        response = format_response(command, admissible, template=template, require_think=require_think)
        ids = prompt_ids(tokenizer, prompt, system_prompt)
        episode.turns.append(demonstration_turn(tokenizer, ids, response, str(info["state"])))
        executed_response = format_response(executed, admissible, template=template, require_think=require_think)
        prompt, reward, terminated, truncated, info = env.step(executed_response)
        if terminated or truncated:
            episode.won = bool(info.get("won", False))
            break
    return episode


def collect_demonstrations(
    env: gym.Env,
    tokenizer: PreTrainedTokenizerBase,
    *,
    num_episodes: int,
    task_ids: Sequence[Any] | None,
    detour_prob: float,
    seed: int,
    max_turns: int | None = None,
    system_prompt: str | None = None,
) -> list[TextEpisode]:
    """``num_episodes`` expert episodes, cycling over ``task_ids`` (None: the env picks by seed),
    their prompts sent with ``system_prompt``.

    Raises:
        ValueError: for ``num_episodes < 1``, ``detour_prob`` outside [0, 1), an env
            without an expert, or an expert that gives no command at the start.
    """
    if num_episodes < 1:
        raise ValueError(f"num_episodes must be >= 1, got {num_episodes}")
    if not 0.0 <= detour_prob < 1.0:
        raise ValueError(f"detour_prob must be in [0, 1), got {detour_prob}")
    rng = np.random.default_rng(seed)
    episodes = []
    for index in range(num_episodes):
        task_id = None if not task_ids else task_ids[index % len(task_ids)]
        episode = play_expert_episode(
            env,
            tokenizer,
            task_id=task_id,
            seed=seed + index,
            detour_prob=detour_prob,
            rng=rng,
            max_turns=max_turns,
            system_prompt=system_prompt,
        )
        if not episode.turns:
            raise ValueError(f"the expert gave no command at the start of task {episode.task_id!r}")
        episodes.append(episode)
    return episodes
