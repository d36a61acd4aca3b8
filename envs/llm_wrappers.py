"""Wrappers that turn a text game into an environment an LLM policy can play.

The stack is ``PromptWrapper(ActionParsingWrapper(base_env))``
(:func:`make_llm_env` builds it):

- :class:`ActionParsingWrapper` takes the raw LLM output as the action,
  extracts the command from its ``<action>...</action>`` block, checks it
  against the admissible commands and either executes it or, for a malformed
  output or an inadmissible command, executes the base env's no-op and
  reports a penalty in ``info["invalid_penalty"]`` (the reward stays the env's).
- :class:`PromptWrapper` replaces the observation by the paper's prompt: task,
  step count, the last ``history_length`` observations and actions, current
  observation and admissible actions (see :mod:`envs.prompts`).

Base-env contract: ``reset(seed=None, options=None) -> (obs, info)`` and
``step(command) -> (obs, reward, terminated, truncated, info)`` with string
observations and commands; ``info`` holds ``admissible_actions`` (list of
str), ``task``, ``state``, ``won``, ``task_id`` and ``step``; the unwrapped
env has ``noop_action`` (a command that changes nothing but counts as a step)
and ``prompt_template`` (``"alfworld"`` or ``"webshop"``).

Output format (decided from the authors' release, which finds the
``<action>`` and ``</action>`` tags and requires a ``<think>`` and a
``</think>`` tag, and in its later projections exactly one of each): an
output is well formed when it holds exactly one ``<think>`` and one
``</think>`` tag, then exactly one ``<action>`` and one ``</action>`` tag,
the think block closing before the action block opens, and a non-empty
command between the action tags. Tags match in any ASCII case; text around
the blocks is ignored. Several action blocks are malformed rather than
resolved by picking one. ``require_think=False`` drops the think-block rule.
With a template that numbers the actions (``"alfworld-numbered"``), a command that is
a number ``N`` between 1 and the number of listed actions stands for the N-th listed
action; the command text stays accepted as well.
Unlike the release, outputs are not rejected for containing Chinese
characters (a heuristic for one model family), and an inadmissible command
is penalised like a malformed output instead of being sent to the engine.

Both wrappers follow Gymnasium's wrapper conventions: they subclass
``gym.Wrapper`` and ``gym.utils.RecordConstructorArgs`` with plain keyword
settings, so ``env.spec`` lists them in ``additional_wrappers`` and
``gym.make(env.spec)`` rebuilds the whole stack of an env made from an id.
"""

from __future__ import annotations

import inspect
import logging
import math
import re
from collections import deque
from collections.abc import Mapping, Sequence
from typing import Any, SupportsFloat

import gymnasium as gym

from envs.prompts import HistoryEntry, PromptTemplate, listed_actions, resolve_template
from envs.spaces import TextSpace

logger = logging.getLogger(__name__)

#: Penalty of a malformed output or an inadmissible command, kept out of the reward (the release's setting).
DEFAULT_INVALID_ACTION_PENALTY = 0.1
#: Remembered (observation, action) pairs shown in the prompt (release setting).
DEFAULT_HISTORY_LENGTH = 2
#: Longest remembered action echoed into the history of later prompts (characters); a longer one
#: is cut and ends with :data:`CUT_MARK`. Admissible commands are far shorter (ALFWorld's < 60,
#: WebShop's searches < 200); the cap keeps one runaway output from filling every later prompt.
DEFAULT_MAX_ACTION_CHARS = 256
#: Appended to a remembered action that was cut at ``max_action_chars``.
CUT_MARK = " [...]"

_TAG_FLAGS = re.IGNORECASE | re.ASCII
_THINK_OPEN = re.compile(r"<think>", _TAG_FLAGS)
_THINK_CLOSE = re.compile(r"</think>", _TAG_FLAGS)
_ACTION_OPEN = re.compile(r"<action>", _TAG_FLAGS)
_ACTION_CLOSE = re.compile(r"</action>", _TAG_FLAGS)
# A list prefix in front of a command: "1. ", "2) ", "- " or "* ".
_LIST_PREFIX = re.compile(r"(?:\d{1,3}[.)]|[-*])\s+")
_QUOTES = ("'", '"')
# An admissible entry such as "search[<your query>]" stands for "search[...]" with any text inside.
_PLACEHOLDER_COMMAND = re.compile(r"(?P<head>[^\[\]]+)\[<[^<>]*>\]")


def _single_block(text: str, opening: re.Pattern[str], closing: re.Pattern[str]) -> tuple[int, int, int, int] | None:
    """Spans of the only ``opening`` and ``closing`` tag of ``text``, in that order.

    Returns:
        ``(open_start, content_start, content_end, close_end)`` character
        offsets, or None unless each tag occurs exactly once, opening first.
    """
    opens = [match.span() for match in opening.finditer(text)]
    closes = [match.span() for match in closing.finditer(text)]
    if len(opens) != 1 or len(closes) != 1 or closes[0][0] < opens[0][1]:
        return None
    return opens[0][0], opens[0][1], closes[0][0], closes[0][1]


def parse_action(text: str, *, require_think: bool = True) -> str | None:
    """The command of a well-formed LLM output, stripped of surrounding whitespace.

    Args:
        text: Raw LLM output.
        require_think: Also require one ``<think>...</think>`` block before the action block.

    Returns:
        The text between the action tags, or None when the output is malformed
        (see the module docstring) or the command is empty. Never raises on a str.
    """
    action = _single_block(text, _ACTION_OPEN, _ACTION_CLOSE)
    if action is None:
        return None
    if require_think:
        think = _single_block(text, _THINK_OPEN, _THINK_CLOSE)
        if think is None or think[3] > action[0]:
            return None
    command = text[action[1] : action[2]].strip()
    return command or None


def extract_think(text: str) -> str | None:
    """The stripped reasoning between the only ``<think>`` and ``</think>`` tags, else None."""
    think = _single_block(text, _THINK_OPEN, _THINK_CLOSE)
    return None if think is None else text[think[1] : think[2]].strip()


def normalize_command(command: str) -> str:
    """Case- and whitespace-insensitive key of a command: runs of whitespace become one space, casefolded."""
    return " ".join(command.split()).casefold()


def match_admissible(command: str, admissible_actions: Sequence[str]) -> str | None:
    """The admissible spelling of ``command``, or None if it is not admissible.

    A command matches an admissible action when both are equal after
    :func:`normalize_command`; the first such action is returned. Failing
    that, an admissible action of the form ``head[<placeholder>]`` (e.g.
    WebShop's ``search[<your query>]``) matches ``head[text]`` with any
    non-empty ``text``, which is kept as written (stripped).
    """
    key = normalize_command(command)
    for admissible in admissible_actions:
        if normalize_command(admissible) == key:
            return admissible
    written = command.strip()
    bracket = written.find("[")
    if bracket < 0 or not written.endswith("]"):
        return None
    head, argument = normalize_command(written[:bracket]), written[bracket + 1 : -1].strip()
    if not argument:
        return None
    for admissible in admissible_actions:
        placeholder = _PLACEHOLDER_COMMAND.fullmatch(admissible)
        if placeholder is not None and normalize_command(placeholder["head"]) == head:
            return f"{placeholder['head']}[{argument}]"
    return None


def numbered_choice(command: str, admissible_actions: Sequence[str], hidden: frozenset[str]) -> str | None:
    """The listed action a numeric answer names (``"3"``: the third listed action), else None."""
    if not (command.isascii() and command.isdigit()):
        return None
    listed = listed_actions(admissible_actions, hidden)
    number = int(command)
    return listed[number - 1] if 1 <= number <= len(listed) else None


#: The ``info`` key of an env with an expert: the expert's next command in the current
#: state (a str; None once it has none). Supervised warm starts imitate it.
EXPERT_ACTION = "expert_action"


def format_response(
    command: str, admissible_actions: Sequence[str], *, template: PromptTemplate, require_think: bool
) -> str:
    """An output that :class:`ActionParsingWrapper` reads as ``command``: an expert's answer.

    ``<action>N</action>`` with the command's number when ``template`` numbers the
    actions and lists it, else ``<action>command</action>``; with ``require_think``
    preceded by a one-sentence think block naming the command (demonstrations carry
    no reasoning of their own).
    """
    body = command
    if template.numbered_actions:
        listed = listed_actions(admissible_actions, template.hidden_actions)
        if command in listed:
            body = str(listed.index(command) + 1)
    answer = f"<action>{body}</action>"
    return f"<think>The next step towards the task is to {command}.</think>\n{answer}" if require_think else answer


def answer_choices(admissible_actions: Sequence[str], *, template: PromptTemplate) -> list[str] | None:
    """Every answer without a think block that :class:`ActionParsingWrapper` reads as a listed command.

    One :func:`format_response` per command the prompt lists, in its order; None when no
    command is listed or one takes free text (a ``head[<placeholder>]`` command such as
    WebShop's ``search[<your query>]``), which no fixed list of answers covers.
    """
    listed = listed_actions(admissible_actions, template.hidden_actions)
    if not listed or any(_PLACEHOLDER_COMMAND.fullmatch(command) for command in listed):
        return None
    return [format_response(command, admissible_actions, template=template, require_think=False) for command in listed]


def template_for(env: gym.Env, template: str | None) -> PromptTemplate:
    """The prompt template ``template`` names, or the env's own (``env.unwrapped.prompt_template``).

    Raises:
        ValueError: when neither names one, or for an invalid template.
    """
    if template is None:
        template = getattr(env.unwrapped, "prompt_template", None)
        if template is None:
            raise ValueError(
                f"no prompt template: pass template='alfworld', 'webshop' or a format string, "
                f"or give {type(env.unwrapped).__name__} a 'prompt_template' attribute"
            )
    return resolve_template(template)


def repair_command(command: str) -> tuple[str, bool]:
    """``command`` without the decorations of a near miss, and whether any was removed.

    Removes, once each and in this order, a list prefix (``1. ``, ``2) ``, ``- ``, ``* ``),
    one trailing full stop, and one pair of matching surrounding quotes (``'`` or ``"``,
    the way the prompt lists the admissible actions); a full stop just inside the quotes
    counts as the trailing one when there was none outside. Nothing else is changed:
    :class:`ActionParsingWrapper` tries the repaired command only when the command as
    written is not admissible, so every other spelling stays as strict as before.
    A command that would become empty is returned unchanged.
    """
    text = command.strip()
    prefix = _LIST_PREFIX.match(text)
    if prefix is not None:
        text = text[prefix.end() :]
    stopped = text.endswith(".")
    if stopped:
        text = text[:-1].rstrip()
    if len(text) >= 2 and text[0] == text[-1] and text[0] in _QUOTES:
        text = text[1:-1].strip()
        if not stopped and text.endswith("."):
            text = text[:-1].rstrip()
    if not text:
        return command, False
    return text, text != command.strip()


def echo_text(text: str, max_chars: int) -> str:
    """``text`` made safe to show in a later prompt: valid UTF-8, at most ``max_chars`` characters.

    Lone surrogates (an output decoded with ``errors="surrogateescape"``, or a model's stray
    half pair) become ``?``, as a tokenizer cannot encode them; a longer text is cut and
    ends with :data:`CUT_MARK`.
    """
    text = text.encode("utf-8", "replace").decode("utf-8")
    if len(text) > max_chars:
        text = text[: max(0, max_chars - len(CUT_MARK))] + CUT_MARK
    return text


def _info_field(info: Mapping[str, Any], key: str, env: gym.Env) -> Any:
    if key not in info:
        raise ValueError(f"{env.unwrapped!r} broke the text-env contract: info has no {key!r} (keys: {sorted(info)})")
    return info[key]


def _admissible_actions(info: Mapping[str, Any], env: gym.Env) -> list[str]:
    actions = _info_field(info, "admissible_actions", env)
    if isinstance(actions, str) or not all(isinstance(action, str) for action in actions):
        raise ValueError(
            f"{env.unwrapped!r} broke the text-env contract: info['admissible_actions'] "
            f"must be a list of str, got {actions!r:.200}"
        )
    return list(actions)


class ActionParsingWrapper(gym.Wrapper[str, str, str, str], gym.utils.RecordConstructorArgs):
    """Executes the command of an LLM output; penalises and no-ops invalid outputs.

    ``step(output)`` parses ``output`` with :func:`parse_action` and matches
    the command with :func:`match_admissible` against the admissible actions
    of the current step. A valid command is passed to the base env in its
    admissible spelling; otherwise ``env.unwrapped.noop_action`` is passed and
    ``invalid_action_penalty`` is reported in ``info["invalid_penalty"]``.

    The returned reward is always the base env's own: the penalty is not part
    of the task's return, so episode returns, success rates and returns-to-go
    stay the env's. The env runner keeps it in ``Turn.penalty`` and the
    advantage core subtracts it from this step's advantage only
    (:mod:`rllib_proxmo.advantages.estimators`).

    ``step`` adds to ``info``:

    - ``format_valid`` (bool): the output is well formed.
    - ``action_admissible`` (bool): well formed and the command is admissible.
    - ``action_repaired`` (bool): the command was admissible only after
      :func:`repair_command` removed a list prefix, a trailing full stop or
      surrounding quotes (it counts as valid, without penalty).
    - ``parsed_action`` (str | None): the command, in its admissible spelling
      when admissible; None for a malformed output.
    - ``executed_action`` (str): what the base env received.
    - ``invalid_penalty`` (float): this step's penalty (0.0, or ``invalid_action_penalty``
      for an invalid output).
    - ``num_invalid_actions`` / ``num_format_errors`` (int): invalid outputs
      (malformed or inadmissible) / malformed outputs so far in the episode.

    ``reset`` adds the two counters (0). Any string is a valid action: this
    wrapper never raises because of the output's content.

    Args:
        env: Base text env (see the module docstring).
        invalid_action_penalty: Non-negative penalty of each invalid output.
        require_think: Whether a ``<think>`` block is part of a well-formed output.
        numbered_from: The prompt template the LLM sees (a name of
            :data:`envs.prompts.TEMPLATES` or a format string), when it numbers the
            actions: a numeric command then names a listed action (see
            :func:`numbered_choice`); None or a template that does not number: no numbers.
    """

    def __init__(
        self,
        env: gym.Env,
        invalid_action_penalty: float = DEFAULT_INVALID_ACTION_PENALTY,
        *,
        require_think: bool = True,
        numbered_from: str | None = None,
    ) -> None:
        gym.utils.RecordConstructorArgs.__init__(
            self,
            invalid_action_penalty=invalid_action_penalty,
            require_think=require_think,
            numbered_from=numbered_from,
        )
        gym.Wrapper.__init__(self, env)
        if isinstance(invalid_action_penalty, bool) or not isinstance(invalid_action_penalty, (int, float)):
            raise ValueError(f"invalid_action_penalty must be a number, got {invalid_action_penalty!r}")
        if not (math.isfinite(invalid_action_penalty) and invalid_action_penalty >= 0):
            raise ValueError(f"invalid_action_penalty must be finite and >= 0, got {invalid_action_penalty}")
        noop_action = getattr(env.unwrapped, "noop_action", None)
        if not isinstance(noop_action, str):
            raise ValueError(
                f"{env.unwrapped!r} has no str attribute 'noop_action' (got {noop_action!r}); "
                "ActionParsingWrapper needs a command that changes nothing"
            )
        self.invalid_action_penalty = float(invalid_action_penalty)
        self.require_think = require_think
        template = None if numbered_from is None else resolve_template(numbered_from)
        self.numbered_from = template if template is not None and template.numbered_actions else None
        self.noop_action = noop_action
        self.action_space = TextSpace()
        self._admissible: list[str] = []
        self._num_invalid = 0
        self._num_format_errors = 0

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[str, dict[str, Any]]:
        obs, info = self.env.reset(seed=seed, options=options)
        self._admissible = _admissible_actions(info, self.env)
        self._num_invalid = 0
        self._num_format_errors = 0
        info["num_invalid_actions"] = 0
        info["num_format_errors"] = 0
        return obs, info

    def step(self, action: str) -> tuple[str, SupportsFloat, bool, bool, dict[str, Any]]:
        if not isinstance(action, str):
            raise TypeError(f"ActionParsingWrapper expects the LLM output as a str, got {type(action).__name__}")
        command = parse_action(action, require_think=self.require_think)
        admissible = None if command is None else self._admissible_spelling(command)
        repaired = False
        if command is not None and admissible is None:
            candidate, changed = repair_command(command)
            admissible = self._admissible_spelling(candidate) if changed else None
            repaired = admissible is not None
        valid = admissible is not None
        executed = admissible if valid else self.noop_action
        if not valid:
            self._num_invalid += 1
            if command is None:
                self._num_format_errors += 1
            logger.debug(
                "invalid LLM output (%s), executing the no-op: %.200r",
                "malformed" if command is None else "inadmissible command",
                action,
            )

        obs, reward, terminated, truncated, info = self.env.step(executed)
        self._admissible = _admissible_actions(info, self.env)
        penalty = 0.0 if valid else self.invalid_action_penalty
        info.update(
            format_valid=command is not None,
            action_admissible=valid,
            action_repaired=repaired,
            parsed_action=admissible if valid else command,
            executed_action=executed,
            invalid_penalty=penalty,
            num_invalid_actions=self._num_invalid,
            num_format_errors=self._num_format_errors,
        )
        return obs, float(reward), terminated, truncated, info

    def _admissible_spelling(self, command: str) -> str | None:
        if self.numbered_from is not None:
            chosen = numbered_choice(command, self._admissible, self.numbered_from.hidden_actions)
            if chosen is not None:
                return chosen
        return match_admissible(command, self._admissible)


class PromptWrapper(gym.Wrapper[str, str, str, str], gym.utils.RecordConstructorArgs):
    """Returns the paper's prompt as the observation.

    The prompt shows the task, the number of steps taken, the last
    ``history_length`` (observation, action) pairs, the current observation
    and the admissible actions. The raw observation stays in
    ``info["observation"]``; ``info["state"]`` is left as the base env set it.

    The action remembered for a step is ``info["parsed_action"]`` when an
    inner :class:`ActionParsingWrapper` provides it (the command in its
    admissible spelling, the inadmissible command as written, or ``""`` for
    a malformed output), as the release records the parsed command; without
    that wrapper it is the action passed to :meth:`step`. Either way it is
    remembered as :func:`echo_text` makes it: lone surrogates replaced, at most
    ``max_action_chars`` characters.

    :meth:`render_prompt` re-renders the current prompt with fewer remembered
    steps, for a caller that must fit the prompt into a token budget.

    Args:
        env: Text env following the base-env contract.
        template: ``"alfworld"``, ``"webshop"`` or a custom format string (see
            :mod:`envs.prompts`); None takes ``env.unwrapped.prompt_template``.
        history_length: Remembered steps shown in the prompt (0: none).
        max_action_chars: Longest remembered action shown (:data:`DEFAULT_MAX_ACTION_CHARS`).
    """

    def __init__(
        self,
        env: gym.Env,
        template: str | None = None,
        history_length: int = DEFAULT_HISTORY_LENGTH,
        max_action_chars: int = DEFAULT_MAX_ACTION_CHARS,
    ) -> None:
        gym.utils.RecordConstructorArgs.__init__(
            self, template=template, history_length=history_length, max_action_chars=max_action_chars
        )
        gym.Wrapper.__init__(self, env)
        if isinstance(history_length, bool) or not isinstance(history_length, int) or history_length < 0:
            raise ValueError(f"history_length must be an int >= 0, got {history_length!r}")
        if isinstance(max_action_chars, bool) or not isinstance(max_action_chars, int) or max_action_chars < 1:
            raise ValueError(f"max_action_chars must be an int >= 1, got {max_action_chars!r}")
        self.max_action_chars = max_action_chars
        self.template: PromptTemplate = template_for(env, template)
        self.history_length = history_length
        self.observation_space = TextSpace()
        self._history: deque[HistoryEntry] = deque(maxlen=history_length)
        self._steps_taken = 0
        self._observation = ""
        self._render_inputs: dict[str, Any] = {}

    @property
    def history_turns(self) -> int:
        """Remembered steps the current prompt shows (at most ``history_length``)."""
        return len(self._history)

    def render_prompt(self, history_turns: int) -> str:
        """The current prompt showing only the latest ``history_turns`` remembered steps.

        The oldest steps are left out first. The wrapper's history is unchanged, so
        the next step's prompt shows the full window again.

        Raises:
            ValueError: before the first ``reset``, or for ``history_turns`` outside
                ``[0, self.history_turns]``.
        """
        if not self._render_inputs:
            raise ValueError("no prompt to render yet: call reset() first")
        if isinstance(history_turns, bool) or not isinstance(history_turns, int):
            raise ValueError(f"history_turns must be an int, got {history_turns!r}")
        if not 0 <= history_turns <= len(self._history):
            raise ValueError(f"history_turns must be in [0, {len(self._history)}], got {history_turns}")
        history = tuple(self._history)[len(self._history) - history_turns :]
        return self.template.render(history=history, **self._render_inputs)

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[str, dict[str, Any]]:
        obs, info = self.env.reset(seed=seed, options=options)
        self._history.clear()
        self._steps_taken = 0
        return self._prompt(obs, info), info

    def step(self, action: str) -> tuple[str, SupportsFloat, bool, bool, dict[str, Any]]:
        obs, reward, terminated, truncated, info = self.env.step(action)
        self._steps_taken += 1
        if "parsed_action" in info:
            remembered = info["parsed_action"] or ""
        else:
            remembered = action
        remembered = echo_text(remembered, self.max_action_chars)
        self._history.append(HistoryEntry(self._steps_taken, self._observation, remembered))
        return self._prompt(obs, info), reward, terminated, truncated, info

    def _prompt(self, obs: str, info: dict[str, Any]) -> str:
        if not isinstance(obs, str):
            raise ValueError(f"{self.env.unwrapped!r} returned a {type(obs).__name__} observation; expected str")
        task = _info_field(info, "task", self.env)
        if not isinstance(task, str):
            raise ValueError(f"{self.env.unwrapped!r} broke the text-env contract: info['task'] must be a str")
        self._observation = obs
        info["observation"] = obs
        self._render_inputs = {
            "task": task,
            "observation": obs,
            "admissible_actions": _admissible_actions(info, self.env),
            "step_count": self._steps_taken,
        }
        for slot in self.template.info_slots:
            value = info.get(slot)
            if not isinstance(value, str):
                raise ValueError(
                    f"the prompt template shows {{{slot}}}, but {self.env.unwrapped!r} gives no str info[{slot!r}] "
                    f"(got {value!r:.100}); use a template without it, or an env that keeps one (ALFWorld-v0)"
                )
        self._render_inputs["env_info"] = {slot: info[slot] for slot in self.template.info_slots}
        return self.render_prompt(len(self._history))


def make_llm_env(
    env: str | gym.Env,
    *,
    template: str | None = None,
    history_length: int = DEFAULT_HISTORY_LENGTH,
    max_action_chars: int = DEFAULT_MAX_ACTION_CHARS,
    invalid_action_penalty: float = DEFAULT_INVALID_ACTION_PENALTY,
    require_think: bool = True,
    **env_kwargs: Any,
) -> PromptWrapper:
    """``PromptWrapper(ActionParsingWrapper(base_env))`` for an env id or instance.

    Made from an id, the result has a spec that rebuilds it: ``gym.make(env.spec)``.

    Args:
        env: A registered env id (``"ALFWorld-v0"``, ``"WebShop-v0"``, ...),
            made with ``gym.make(env, **env_kwargs)``, or a base env instance.
        template, history_length, max_action_chars: See :class:`PromptWrapper`.
        invalid_action_penalty, require_think: See :class:`ActionParsingWrapper`.
        **env_kwargs: Keyword arguments of the base env (only with an env id).

    Raises:
        ValueError: for ``env_kwargs`` given with an env instance, or any
            invalid wrapper setting.
    """
    if isinstance(env, str):
        env = gym.make(env, **env_kwargs)
    elif env_kwargs:
        raise ValueError(f"env_kwargs {sorted(env_kwargs)} only apply when the env is given by id, not to {env!r}")
    shown = template if template is not None else getattr(env.unwrapped, "prompt_template", None)
    parsing = ActionParsingWrapper(env, invalid_action_penalty, require_think=require_think, numbered_from=shown)
    return PromptWrapper(parsing, template=template, history_length=history_length, max_action_chars=max_action_chars)


#: The wrappers' settings among :func:`make_llm_env`'s keywords (``llm_env_config``'s keys).
LLM_ENV_SETTINGS = tuple(
    name
    for name, parameter in inspect.signature(make_llm_env).parameters.items()
    if parameter.kind is inspect.Parameter.KEYWORD_ONLY
)


def check_llm_env_settings(settings: Mapping[str, Any]) -> None:
    """Refuse ``llm_env_config`` keys that are not wrapper settings (:data:`LLM_ENV_SETTINGS`).

    Raises:
        ValueError: naming the unknown keys and the allowed ones.
    """
    if not isinstance(settings, Mapping):
        raise ValueError(f"llm_env_config must be a dict or None, got {type(settings).__name__}")
    unknown = sorted(set(settings) - set(LLM_ENV_SETTINGS))
    if unknown:
        raise ValueError(
            f"llm_env_config has unknown keys {unknown}; allowed: {', '.join(LLM_ENV_SETTINGS)} "
            "(settings of the base env go in env_config / --env-config)"
        )
