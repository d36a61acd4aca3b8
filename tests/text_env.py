"""TextGuess: a small deterministic text game that follows the base-env contract.

A chest is shut by a button lock. The task sentence names the code, a
sequence of ``code_length`` button colours; the agent must press the buttons
in that order. A right press sets one more button, a wrong press jams the lock
and ends the episode, the last right press opens the chest (reward 1, won).
``look`` and ``help`` describe the game without changing it; any other command
(the no-op ``""`` among them) prints "Nothing happens.", as ALFWorld does, so
every string of the action space is a valid action. Every command counts as a step and
the episode is truncated after ``max_steps`` steps. So exactly one sequence of
button presses wins, and ``look``/``help``/no-op steps only cost time.

Tasks are the ``len(buttons) ** code_length`` codes, numbered like base-``len(buttons)``
numbers (task 0 is the first button pressed ``code_length`` times). ``reset``
takes ``options={"task_id": k}``; without it the task is drawn from the env's
seeded generator. Importing this module registers the env as ``TextGuess-v0``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import gymnasium as gym
import numpy as np

from envs.spaces import TextSpace

DEFAULT_BUTTONS = ("red", "green", "blue")


def _list_words(words: Sequence[str]) -> str:
    """``"a"``, ``"a and b"``, ``"a, b and c"``."""
    return words[0] if len(words) == 1 else f"{', '.join(words[:-1])} and {words[-1]}"


class TextGuessEnv(gym.Env[str, str]):
    """Open a button-locked chest by pressing the buttons in the order the task names.

    Args:
        code_length: Buttons to press to open the chest (>= 1).
        max_steps: Steps before truncation (>= code_length); default ``code_length + 2``.
        buttons: Distinct button names (>= 2), each one word.

    Observations and actions are str. ``info`` holds ``admissible_actions``,
    ``task``, ``state`` (the observation), ``won``, ``task_id``, ``step`` and
    ``expert_action`` (the next right press; None once the episode is over).
    """

    metadata: dict[str, Any] = {"render_modes": []}
    #: Command that changes nothing but counts as a step.
    noop_action = ""
    #: Prompt used by :class:`envs.llm_wrappers.PromptWrapper` (the game reads like ALFWorld).
    prompt_template = "alfworld"

    def __init__(
        self,
        code_length: int = 3,
        max_steps: int | None = None,
        buttons: Sequence[str] = DEFAULT_BUTTONS,
    ) -> None:
        if isinstance(code_length, bool) or not isinstance(code_length, int) or code_length < 1:
            raise ValueError(f"code_length must be an int >= 1, got {code_length!r}")
        max_steps = code_length + 2 if max_steps is None else max_steps
        if isinstance(max_steps, bool) or not isinstance(max_steps, int) or max_steps < code_length:
            raise ValueError(f"max_steps must be an int >= code_length ({code_length}), got {max_steps!r}")
        buttons = tuple(buttons)
        if len(buttons) < 2 or any(not isinstance(b, str) or len(b.split()) != 1 for b in buttons):
            raise ValueError(f"buttons must be at least two one-word names, got {buttons!r}")
        if len({b.casefold() for b in buttons}) != len(buttons):
            raise ValueError(f"button names must differ ignoring case, got {buttons!r}")
        self.code_length = code_length
        self.max_steps = max_steps
        self.buttons = buttons
        self.num_tasks = len(buttons) ** code_length
        #: Every task, as ALFWorld and WebShop list theirs.
        self.task_ids = list(range(self.num_tasks))
        self.observation_space = TextSpace()
        self.action_space = TextSpace()
        self._code: tuple[str, ...] = ()
        self._task_id = -1
        self._progress = 0
        self._steps = 0
        self._over = True

    def code(self, task_id: int) -> tuple[str, ...]:
        """The button sequence of task ``task_id``."""
        if isinstance(task_id, bool) or not isinstance(task_id, (int, np.integer)) or not 0 <= task_id < self.num_tasks:
            raise ValueError(f"task_id must be an int in [0, {self.num_tasks}), got {task_id!r}")
        presses = []
        remainder = int(task_id)
        for _ in range(self.code_length):
            remainder, digit = divmod(remainder, len(self.buttons))
            presses.append(self.buttons[digit])
        return tuple(reversed(presses))

    @property
    def task(self) -> str:
        return f"open the chest by pressing {', '.join(self._code)} in this order."

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[str, dict[str, Any]]:
        super().reset(seed=seed)
        task_id = (options or {}).get("task_id")
        if task_id is None:
            task_id = int(self.np_random.integers(self.num_tasks))
        self._code = self.code(task_id)
        self._task_id = int(task_id)
        self._progress = 0
        self._steps = 0
        self._over = False
        obs = (
            f"You are in a vault. A chest stands in front of you, shut by a lock with "
            f"{len(self.buttons)} buttons: {_list_words(self.buttons)}.\n"
            f"Your task is to: {self.task}"
        )
        return obs, self._info(obs, won=False)

    def admissible_actions(self) -> list[str]:
        """Commands accepted now: look, help and one press per button (none once the episode is over)."""
        if self._over:
            return []
        return ["look", "help", *(f"press {button}" for button in self.buttons)]

    def step(self, action: str) -> tuple[str, float, bool, bool, dict[str, Any]]:
        if self._over:
            raise ValueError("the TextGuess episode is over (or never started); call reset()")
        self._steps += 1
        won = terminated = False
        if action not in self.admissible_actions():
            obs = "Nothing happens."
        elif action == "look":
            obs = f"The chest is locked. {self._progress} of {self.code_length} buttons are set."
        elif action == "help":
            obs = f"Press the buttons in the order your task gives: {', '.join(self.admissible_actions())}."
        else:
            obs, won, terminated = self._press(action.removeprefix("press "))
        truncated = not terminated and self._steps >= self.max_steps
        self._over = terminated or truncated
        return obs, float(won), terminated, truncated, self._info(obs, won=won)

    def _press(self, button: str) -> tuple[str, bool, bool]:
        """Observation, won, terminated after pressing ``button``."""
        if button != self._code[self._progress]:
            return f"You press the {button} button. The lock jams with a loud clunk.", False, True
        self._progress += 1
        if self._progress == self.code_length:
            return f"You press the {button} button. The lock clicks open and the chest swings open.", True, True
        return (
            f"You press the {button} button. It clicks into place: "
            f"{self._progress} of {self.code_length} buttons are set.",
            False,
            False,
        )

    def _info(self, obs: str, *, won: bool) -> dict[str, Any]:
        return {
            "admissible_actions": self.admissible_actions(),
            "task": self.task,
            "state": obs,
            "won": won,
            "task_id": self._task_id,
            "step": self._steps,
            "expert_action": None if self._over else f"press {self._code[self._progress]}",
        }


if "TextGuess-v0" not in gym.registry:
    gym.register(id="TextGuess-v0", entry_point=f"{__name__}:TextGuessEnv")
