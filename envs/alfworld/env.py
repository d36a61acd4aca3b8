"""ALFWorld as a Gymnasium text environment (``ALFWorld-v0``).

Observations are the engine's raw text, actions plain ALFWorld commands
(``"go to cabinet 1"``, ``"take mug 2 from cabinet 1"``, ``"heat mug 2 with
microwave 1"``, ...). The reward is 1.0 on the step that wins the game and 0
otherwise; winning terminates the episode and ``max_steps`` steps truncate it.

Any string is a legal action: a command the game does not accept (the empty
string :attr:`ALFWorldEnv.noop_action` included) gets the engine's answer
``"Nothing happens."``, leaves the game unchanged and counts as a step.

``info`` holds, after ``reset`` and every ``step``:

- ``won`` (bool), ``admissible_actions`` (list[str], the engine's order),
  ``task_id`` (str), ``task_type`` (``pick``, ``look``, ``clean``, ``heat``,
  ``cool`` or ``pick2``), ``task`` (the goal sentence, e.g.
  ``"put a clean mug in coffeemachine."``), ``state`` (the raw observation
  text, what ProxMO's PSA compares), ``step`` (steps taken) and ``memory``
  (what the agent has seen of the room this episode, :class:`~envs.alfworld.memory.RoomMemory`:
  the ``{memory}`` slot of a prompt) and ``inventory`` (the name of the object the agent
  carries, ``"nothing"`` when its hands are empty: the ``{inventory}`` slot);
- with ``expert`` set, ``expert_action``: the next command of an expert
  (:data:`EXPERTS`): ``"oracle"``, :class:`~envs.alfworld.expert.ExpertPolicy` planned from the
  whole current state, or ``"search"``, :class:`~envs.alfworld.expert.SearchingExpert`, which
  knows only the receptacles the agent has looked into this episode and searches for the rest
  (``None`` once the game is won, or if no route exists).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import gymnasium as gym
from textworld.core import Environment, GameState

from envs.alfworld.engine import make_engine
from envs.alfworld.expert import ExpertPolicy, SearchingExpert, World
from envs.alfworld.games import GameEntry, load_games
from envs.alfworld.memory import RoomMemory
from envs.spaces import TextSpace
from envs.task_selection import TaskSelectionMixin

logger = logging.getLogger(__name__)

#: Generated games a split holds by default: two per task type, built in well
#: under a minute on a fresh machine. Build bigger sets once with
#: ``python -m envs.alfworld.generate --split train --num-games 300``.
DEFAULT_NUM_GAMES = 12
#: Step limit of the paper's ALFWorld runs.
DEFAULT_MAX_STEPS = 50
#: The experts ``expert`` names: the full-knowledge planner, and the one that searches.
EXPERTS: dict[str, type[ExpertPolicy]] = {"oracle": ExpertPolicy, "search": SearchingExpert}

_TASK_SENTENCE = re.compile(r"Your task is to: (.*)$", re.DOTALL)


def task_sentence(observation: str) -> str:
    """The goal sentence of an ALFWorld start observation (text after ``"Your task is to: "``).

    Raises:
        ValueError: when the observation states no task.
    """
    match = _TASK_SENTENCE.search(observation)
    if match is None:
        raise ValueError("the observation holds no 'Your task is to: ' sentence")
    return match.group(1).strip()


class ALFWorldEnv(TaskSelectionMixin, gym.Env[str, str]):
    """ALFWorld households on ALFWorld's TextWorld/PDDL engine.

    Args:
        split: ``"train"``, ``"seen"`` (in-distribution) or ``"unseen"``
            (out-of-distribution: held-out rooms).
        data_source: ``"generated"`` (games built from the scenes in the
            ``alfworld`` wheel, cached) or ``"alfworld"`` (ALFWorld's
            downloaded data).
        data_dir: ALFWorld's data root for ``data_source="alfworld"``
            (default ``$ALFWORLD_DATA``).
        max_steps: Steps after which an episode is truncated.
        expert: Add ``info["expert_action"]`` from this expert of :data:`EXPERTS` (None: no expert).
        task_types: Short task types to play (all six by default).
        num_games: Games in the split: generated on first use for
            ``"generated"`` (default :data:`DEFAULT_NUM_GAMES`), the first ones
            for ``"alfworld"`` (default: all).
        games_seed: Seed of game generation.
        cache_dir: Cache of generated games (default
            ``$RLLIB_PROXMO_ALFWORLD_CACHE`` or ``~/.cache/rllib_proxmo/alfworld``).
        fast_engine: Use the fast engine of :mod:`envs.alfworld.fast_engine`
            (default); ``False`` plays on TextWorld's stock engine.

    Raises:
        ValueError: for an unknown split, source, task type or expert, or a bad
            ``max_steps``/``num_games``.
        FileNotFoundError: for a missing ALFWorld data directory.
    """

    metadata = {"render_modes": []}
    #: The action that does nothing (what LLM wrappers send for unusable output).
    noop_action = ""
    #: Built-in prompt of :mod:`envs.prompts` for this environment.
    prompt_template = "alfworld"

    def __init__(
        self,
        split: str = "train",
        data_source: str = "generated",
        data_dir: str | Path | None = None,
        max_steps: int = DEFAULT_MAX_STEPS,
        expert: str | None = None,
        task_types: Sequence[str] | None = None,
        num_games: int | None = None,
        games_seed: int = 0,
        cache_dir: str | Path | None = None,
        fast_engine: bool = True,
    ) -> None:
        if isinstance(max_steps, bool) or not isinstance(max_steps, int) or max_steps < 1:
            raise ValueError(f"max_steps must be a positive int, got {max_steps!r}")
        if expert is not None and expert not in EXPERTS:
            raise ValueError(f"expert must be None or one of {sorted(EXPERTS)}, got {expert!r}")
        if num_games is None and data_source == "generated":
            num_games = DEFAULT_NUM_GAMES
        self.games: list[GameEntry] = load_games(
            data_source,
            split,
            num_games=num_games,
            seed=games_seed,
            task_types=task_types,
            data_dir=data_dir,
            cache_dir=cache_dir,
        )
        self._games_by_id = {entry.task_id: entry for entry in self.games}
        self.split = split
        self.max_steps = max_steps
        self.expert = expert
        self.fast_engine = fast_engine
        self.observation_space = TextSpace()
        self.action_space = TextSpace()
        #: Expert calls that found no command in an unfinished game.
        self.expert_failures = 0

        self._engine: Environment | None = None
        self._loaded_file: Path | None = None
        self._init_task_queue()
        self._game: GameEntry | None = None
        self._policy: ExpertPolicy | None = None
        self._memory: RoomMemory | None = None
        self._task = ""
        self._steps = 0
        self._done = True

    @property
    def task_ids(self) -> list[str]:
        """Ids of the split's games, in catalogue order."""
        return [entry.task_id for entry in self.games]

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[str, dict[str, Any]]:
        """Start a game: ``options["task_id"]``, else the next queued one, else one drawn with the seed.

        Raises:
            ValueError: for unknown options or an unknown ``task_id``.
        """
        super().reset(seed=seed)
        game = self._games_by_id[self._select_task(options)]

        if self._engine is None:
            self._engine = make_engine(game.game_file, fast=self.fast_engine)
        elif self._loaded_file != game.game_file:
            self._engine.load(str(game.game_file))
        self._loaded_file = game.game_file
        state = self._engine.reset()

        self._game = game
        self._policy = EXPERTS[self.expert](game.task) if self.expert is not None else None
        self._memory = RoomMemory()
        self._task = task_sentence(state.feedback)
        self._steps = 0
        self._done = False
        return state.feedback, self._info(state)

    def step(self, action: str) -> tuple[str, float, bool, bool, dict[str, Any]]:
        """Play one command; see the module docstring for rewards and ends.

        Raises:
            ValueError: when ``action`` is not a ``str``.
            RuntimeError: before ``reset`` or after the episode ended.
        """
        if self._done:
            raise RuntimeError("the episode is over (or never started); call reset() first")
        if not isinstance(action, str):
            raise ValueError(f"ALFWorld actions are command strings, got {type(action).__name__}: {action!r}")
        state, _, _ = self._engine.step(action)
        self._steps += 1
        won = bool(state["won"])
        truncated = not won and self._steps >= self.max_steps
        self._done = won or truncated
        return state.feedback, 1.0 if won else 0.0, won, truncated, self._info(state)

    def close(self) -> None:
        """Release the engine."""
        if self._engine is not None:
            self._engine.close()
        self._engine = None
        self._loaded_file = None
        self._done = True

    def _checked_task_id(self, task_id: object) -> str:
        if not isinstance(task_id, str) or task_id not in self._games_by_id:
            examples = ", ".join(repr(task) for task in self.task_ids[:3])
            raise ValueError(
                f"unknown task_id {task_id!r} for split {self.split!r} ({len(self.games)} games, e.g. {examples})"
            )
        return task_id

    def _info(self, state: GameState) -> dict[str, Any]:
        assert self._game is not None and self._memory is not None
        world = World.from_game_state(state)
        self._memory.observe(world)
        info: dict[str, Any] = {
            "won": bool(state["won"]),
            "admissible_actions": list(state["admissible_commands"]),
            "task_id": self._game.task_id,
            "task_type": self._game.task.task_type,
            "task": self._task,
            "state": state.feedback,
            "step": self._steps,
            "memory": self._memory.text(world),
            "inventory": "nothing" if world.held is None else world.name(world.held),
        }
        if self._policy is not None:
            info["expert_action"] = self._expert_action(state, world)
        return info

    def _expert_action(self, state: GameState, world: World) -> str | None:
        assert self._policy is not None
        self._policy.observe(world)
        command = self._policy.next_command(world)
        if command is None and not state["won"]:
            self.expert_failures += 1
            logger.warning("expert found no route in %s at step %d", self._game.task_id, self._steps)
        return None if command is None else command.text
