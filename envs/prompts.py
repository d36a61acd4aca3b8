"""The ProxMO prompts (paper, Appendix D) and their rendering.

The wording of :data:`ALFWORLD` and :data:`WEBSHOP` is the paper's (Figure 6
and Figure 7), with ASCII apostrophes. Three rendering details follow the
authors' release (verl-agent lineage), where the figures leave them open:

- **First step.** While no step has been taken (or with a history length of
  0) a shorter prompt is used: the same wording without the step-count and
  history sentences.
- **History.** Each remembered step ``k`` is one line
  ``[Observation k: '<observation shown at step k>', Action k: '<action taken at step k>']``,
  oldest first, numbered from the start of the episode. ``{history_length}``
  is the number of lines shown (fewer than the window early in an episode).
- **Hidden commands.** ALFWorld's ``help`` command is left out of the listed
  actions, as in the release: it prints the command grammar and never
  advances a task. It stays admissible for the engine.

Admissible actions are listed in the environment's order, each in single
quotes, separated by ``", "``. The templates end the task and observation
sentences with their own full stop, so one trailing full stop of the task
and observation text is dropped when they are filled in (``"...cabinet 1."``
would otherwise read ``"...cabinet 1.."``).

A custom template is a :meth:`str.format` string using any of :data:`SLOTS`;
it is used at every step.

:data:`ALFWORLD_COMPACT` (``"alfworld-compact"``) is the CPU prompt for free answers, not
the paper's: the task, the remembered steps, the observation and the admissible
actions one per line, answered by ``<action>command</action>`` without a think
block. :data:`ALFWORLD_NUMBERED` (``"alfworld-numbered"``) numbers the lines and asks
for ``<action>N</action>`` (the command itself is accepted too, see
:class:`envs.llm_wrappers.ActionParsingWrapper`). Measured side by side on SmolLM2-135M
(``benchmarks/results/cpu_prompt.md``): after the same warm start the model copies a
listed command far more reliably than it names the right number, so the compact
prompt answers with the command. :data:`ALFWORLD_UNLISTED` (``"alfworld-unlisted"``) is
the compact prompt without the action list and without the line asking for the answer's form,
for answers held to the admissible commands (``model_config["constrain_to_admissible"]``), which
enforce both token by token: the CPU default's prompt wherever its answers are held. :data:`ALFWORLD_MEMORY`
(``"alfworld-memory"``) adds the ``{memory}`` slot before the observation: what the agent has
seen of the room this episode, as the env keeps it (``info["memory"]``;
:class:`~envs.alfworld.memory.RoomMemory` for ALFWorld). Not the CPU default: after the same
warm start SmolLM2-135M won fewer unseen games with it (``benchmarks/results/cpu_default.md``).
:data:`ALFWORLD_INVENTORY` (``"alfworld-inventory"``) adds the ``{inventory}`` slot instead: the
object the agent carries (``info["inventory"]``), which a prompt remembering one step forgets
once the agent has walked away from where it took it. :data:`ALFWORLD_ROOM` (``"alfworld-room"``)
shows both slots, for ``history_length=0``: what the searching expert knows, without remembered steps.
"""

from __future__ import annotations

import string
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property
from types import MappingProxyType
from typing import NamedTuple

#: Names a template may use. ``admissible_actions`` (Figure 6) and
#: ``available_actions`` (Figure 7) are the same rendered list.
SLOTS = frozenset(
    {
        "task_description",
        "step_count",
        "history_length",
        "action_history",
        "current_step",
        "current_observation",
        "admissible_actions",
        "available_actions",
        "memory",
        "inventory",
    }
)
#: Slots filled from the env's ``info`` entry of the same name (a str the env keeps each step).
INFO_SLOTS = ("memory", "inventory")


class HistoryEntry(NamedTuple):
    """One remembered step of the episode.

    Attributes:
        step: 1-based index of the step in the episode.
        observation: Raw observation the agent saw before acting at this step.
        action: Command the agent gave at this step.
    """

    step: int
    observation: str
    action: str


def _drop_full_stop(text: str) -> str:
    """``text`` without trailing whitespace and without one trailing ``"."``."""
    text = text.rstrip()
    return text[:-1] if text.endswith(".") else text


def format_history(entries: Iterable[HistoryEntry]) -> str:
    """Render remembered steps, one ``[Observation k: '...', Action k: '...']`` line each."""
    return "\n".join(
        f"[Observation {entry.step}: '{entry.observation}', Action {entry.step}: '{entry.action}']" for entry in entries
    )


def listed_actions(actions: Iterable[str], hidden: frozenset[str] = frozenset()) -> list[str]:
    """The commands a prompt lists: ``actions`` in their given order without the ``hidden`` ones."""
    return [action for action in actions if action not in hidden]


#: How a template renders its action list: ``'a', 'b'``; one per line; lines ``1: a``, ``2: b``.
ACTION_LISTS = ("quoted", "lines", "numbered")


def format_actions(actions: Iterable[str], hidden: frozenset[str] = frozenset(), *, style: str = "quoted") -> str:
    """Render the listed commands in the :data:`ACTION_LISTS` ``style``."""
    listed = listed_actions(actions, hidden)
    if style == "numbered":
        return "\n".join(f"{number}: {action}" for number, action in enumerate(listed, start=1))
    if style == "lines":
        return "\n".join(listed)
    if style == "quoted":
        return ", ".join(f"'{action}'" for action in listed)
    raise ValueError(f"action list style must be one of {ACTION_LISTS}, got {style!r}")


def template_slots(format_string: str) -> set[str]:
    """Names used by a :meth:`str.format` string.

    Raises:
        ValueError: if the string is not a valid format string, uses positional
            fields, attribute/index access, or a name outside :data:`SLOTS`.
    """
    try:
        fields = [name for _, name, _, _ in string.Formatter().parse(format_string) if name is not None]
    except ValueError as error:
        raise ValueError(f"prompt template is not a valid format string: {error}") from error
    names = set(fields)
    positional = {name for name in names if name == "" or name.isdigit()}
    if positional:
        raise ValueError(
            f"prompt template uses positional fields {sorted(positional)}; use named slots from {sorted(SLOTS)}"
        )
    unknown = names - SLOTS
    if unknown:
        raise ValueError(f"prompt template uses unknown slots {sorted(unknown)}; known slots: {sorted(SLOTS)}")
    return names


@dataclass(frozen=True)
class PromptTemplate:
    """A prompt for a text environment: one format string per episode phase.

    Attributes:
        first_step: Format string used while the history is empty.
        with_history: Format string used once at least one step is remembered.
        hidden_actions: Commands left out of the rendered action list.
        action_list: How the actions are rendered (:data:`ACTION_LISTS`); with ``"numbered"``
            an answer may be the number of an action (:func:`listed_actions` gives the numbering).
    """

    first_step: str
    with_history: str
    hidden_actions: frozenset[str] = frozenset()
    action_list: str = "quoted"

    @cached_property
    def info_slots(self) -> tuple[str, ...]:
        """The :data:`INFO_SLOTS` the prompt shows (each read from the env's ``info`` at every step)."""
        used = template_slots(self.first_step) | template_slots(self.with_history)
        return tuple(slot for slot in INFO_SLOTS if slot in used)

    @property
    def numbered_actions(self) -> bool:
        """Whether an answer may name an action by its number."""
        return self.action_list == "numbered"

    def __post_init__(self) -> None:
        if self.action_list not in ACTION_LISTS:
            raise ValueError(f"action_list must be one of {ACTION_LISTS}, got {self.action_list!r}")
        for format_string in (self.first_step, self.with_history):
            template_slots(format_string)
            # A dry run catches bad format specs such as "{step_count:q}".
            try:
                format_string.format(**_example_slot_values())
            except (ValueError, TypeError) as error:
                raise ValueError(f"prompt template cannot be rendered: {error}") from error

    @classmethod
    def from_format_string(cls, format_string: str) -> PromptTemplate:
        """A custom template: the same format string at every step."""
        return cls(first_step=format_string, with_history=format_string)

    def render(
        self,
        *,
        task: str,
        observation: str,
        admissible_actions: Sequence[str],
        history: Sequence[HistoryEntry],
        step_count: int,
        env_info: Mapping[str, str] = MappingProxyType({}),
    ) -> str:
        """The prompt for the current step.

        Args:
            task: Goal sentence of the episode.
            observation: Raw current observation.
            admissible_actions: Commands the environment accepts now, in its order.
            history: Remembered steps, oldest first (already cut to the window).
            step_count: Steps taken so far in the episode (0 at reset).
            env_info: The values of :attr:`info_slots` (``info["memory"]``: what the agent has seen
                this episode; ``info["inventory"]``: what it carries); a slot left out renders empty.

        Returns:
            The rendered prompt. Slot values are inserted verbatim apart from
            the trailing full stop of ``task`` and ``observation``; braces in
            them are not interpreted.
        """
        actions = format_actions(admissible_actions, self.hidden_actions, style=self.action_list)
        format_string = self.with_history if history else self.first_step
        return format_string.format(
            task_description=_drop_full_stop(task),
            step_count=step_count,
            history_length=len(history),
            action_history=format_history(history),
            current_step=step_count + 1,
            current_observation=_drop_full_stop(observation),
            admissible_actions=actions,
            available_actions=actions,
            **{slot: env_info.get(slot, "") for slot in INFO_SLOTS},
        )


def _example_slot_values() -> dict[str, object]:
    return {
        "task_description": "task",
        "step_count": 1,
        "history_length": 1,
        "action_history": "[Observation 1: 'o', Action 1: 'a']",
        "current_step": 2,
        "current_observation": "observation",
        "admissible_actions": "'a'",
        "available_actions": "'a'",
        "memory": "memory",
        "inventory": "inventory",
    }


_THINK_AND_ACT = (
    "This reasoning process MUST be enclosed within <think> </think> tags.\n"
    "Once you've finished your reasoning, you should choose an admissible action for the current step "
    "and present it within <action> </action> tags."
)
_HISTORY_SENTENCES = (
    "Prior to this step, you have already taken {step_count} step(s). "
    "Below are the most recent {history_length} observations and the corresponding actions you took: "
    "{action_history}. "
)

_ALFWORLD_OPENING = (
    "You are an expert agent operating in the ALFRED embodied environment. Your task is to: {task_description}. "
)
_ALFWORLD_CLOSING = (
    "Your admissible actions for the current situation are: [{admissible_actions}].\n"
    "Now it's your turn to take an action.\n"
    "You should first reason step-by-step about the current situation. " + _THINK_AND_ACT
)

#: Figure 6 of the paper.
ALFWORLD = PromptTemplate(
    first_step=_ALFWORLD_OPENING + "Your current observation is: {current_observation}. " + _ALFWORLD_CLOSING,
    with_history=(
        _ALFWORLD_OPENING
        + _HISTORY_SENTENCES
        + "You are now at step {current_step} and your current observation is: {current_observation}. "
        + _ALFWORLD_CLOSING
    ),
    hidden_actions=frozenset({"help"}),
)

_WEBSHOP_OPENING = (
    "You are an expert autonomous agent operating in the WebShop e-commerce environment. "
    "Your task is to: {task_description}. "
)
_WEBSHOP_CLOSING = (
    "Your admissible actions for the current situation are: [{available_actions}].\n"
    "Now it's your turn to take one action for the current step.\n"
    "You should first reason step-by-step about the current situation, then think carefully which "
    "admissible action best advances the shopping goal. " + _THINK_AND_ACT
)

#: Figure 7 of the paper.
WEBSHOP = PromptTemplate(
    first_step=_WEBSHOP_OPENING + "Your current observation is: {current_observation}. " + _WEBSHOP_CLOSING,
    with_history=(
        _WEBSHOP_OPENING
        + _HISTORY_SENTENCES
        + "You are now at step {current_step} and your current observation is: {current_observation}. "
        + _WEBSHOP_CLOSING
    ),
)

_COMPACT_OPENING = "Task: {task_description}.\n"
_COMPACT_OBSERVATION = "Observation: {current_observation}.\nActions:\n{admissible_actions}\n"


def _compact(answer: str, action_list: str, observation: str = _COMPACT_OBSERVATION) -> PromptTemplate:
    closing = observation + answer
    return PromptTemplate(
        first_step=_COMPACT_OPENING + closing,
        with_history=_COMPACT_OPENING + "Previous steps:\n{action_history}\n" + closing,
        hidden_actions=frozenset({"help"}),
        action_list=action_list,
    )


#: The closing line of the compact prompts answered with the command.
_ANSWER_WITH_COMMAND = "Answer with the best action as <action>action</action>."

#: The CPU default's prompt (see the module docstring); not the paper's.
ALFWORLD_COMPACT = _compact(_ANSWER_WITH_COMMAND, "lines")
#: The compact prompt with numbered actions, answered by number (measured against it).
ALFWORLD_NUMBERED = _compact("Answer with the number of the best action as <action>number</action>.", "numbered")


def _unlisted(state_lines: str = "") -> PromptTemplate:
    """The compact prompt without the action list or the answer instruction, with ``state_lines``
    before the observation: held answers write ``<action>command</action>`` whatever the prompt says."""
    return _compact("", "lines", observation=state_lines + "Observation: {current_observation}.")


#: The compact prompt without the action list or the answer-form line, for answers held to the
#: admissible commands (``constrain_to_admissible``): the choice and its form are enforced token
#: by token, so the list (most of the compact prompt's tokens) and the line are only prompt length.
ALFWORLD_UNLISTED = _unlisted()
#: The unlisted prompt with what the agent has seen of the room (``info["memory"]`` of
#: :class:`~envs.alfworld.env.ALFWorldEnv`) before the observation.
ALFWORLD_MEMORY = _unlisted("{memory}\n")
#: The unlisted prompt with what the agent carries (``info["inventory"]`` of
#: :class:`~envs.alfworld.env.ALFWorldEnv`) before the observation.
ALFWORLD_INVENTORY = _unlisted("Carrying: {inventory}.\n")
#: The unlisted prompt with both: what the agent has seen of the room and what it carries, all a
#: searching agent needs besides the observation (meant for ``history_length=0``).
ALFWORLD_ROOM = _unlisted("{memory}\nCarrying: {inventory}.\n")

#: Built-in templates by name (the ``prompt_template`` attribute of the base envs).
TEMPLATES: dict[str, PromptTemplate] = {
    "alfworld": ALFWORLD,
    "webshop": WEBSHOP,
    "alfworld-compact": ALFWORLD_COMPACT,
    "alfworld-numbered": ALFWORLD_NUMBERED,
    "alfworld-unlisted": ALFWORLD_UNLISTED,
    "alfworld-memory": ALFWORLD_MEMORY,
    "alfworld-inventory": ALFWORLD_INVENTORY,
    "alfworld-room": ALFWORLD_ROOM,
}


def resolve_template(name_or_format: str) -> PromptTemplate:
    """The built-in template called ``name_or_format``, or a custom one built from it.

    Raises:
        ValueError: for a string that is neither a built-in name nor a format
            string with at least one slot, or an invalid format string.
    """
    if not isinstance(name_or_format, str):
        raise ValueError(f"prompt template must be a str, got {type(name_or_format).__name__}")
    if name_or_format in TEMPLATES:
        return TEMPLATES[name_or_format]
    if not template_slots(name_or_format):
        raise ValueError(
            f"unknown prompt template {name_or_format!r}: expected one of {sorted(TEMPLATES)} "
            f"or a format string using slots from {sorted(SLOTS)}"
        )
    return PromptTemplate.from_format_string(name_or_format)
