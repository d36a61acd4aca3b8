"""Tests of envs.llm_wrappers, envs.prompts, envs.spaces and the TextGuess test game."""

from __future__ import annotations

import itertools
import math
import random
import re
import string
import warnings

import gymnasium as gym
import pytest
from gymnasium.spaces.utils import flatdim, flatten
from gymnasium.utils.env_checker import check_env
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from envs import ALFWORLD as ALFWORLD_ID
from envs import HOUSEHOLD as HOUSEHOLD_ID
from envs import WEBSHOP as WEBSHOP_ID
from envs.llm_wrappers import (
    CUT_MARK,
    DEFAULT_MAX_ACTION_CHARS,
    LLM_ENV_SETTINGS,
    ActionParsingWrapper,
    PromptWrapper,
    answer_choices,
    check_llm_env_settings,
    extract_think,
    format_response,
    make_llm_env,
    match_admissible,
    parse_action,
    repair_command,
)
from envs.prompts import ALFWORLD, WEBSHOP, HistoryEntry, PromptTemplate, resolve_template
from envs.spaces import TextSpace
from tests.text_env import TextGuessEnv

FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# Task 5 of the default game: press red, green, blue.
TASK = 5
ADMISSIBLE = ["look", "help", "press red", "press green", "press blue"]
INTRO = (
    "You are in a vault. A chest stands in front of you, shut by a lock with 3 buttons: red, green and blue.\n"
    "Your task is to: open the chest by pressing red, green, blue in this order."
)


def respond(command: str, thought: str = "I should act.") -> str:
    return f"<think>{thought}</think>\n<action>{command}</action>"


def llm_env(**config) -> PromptWrapper:
    env = make_llm_env(TextGuessEnv(), **config)
    env.reset(options={"task_id": TASK})
    return env


# --------------------------------------------------------------------------- parsing


@pytest.mark.parametrize(
    ("text", "require_think", "expected"),
    [
        ("<think>go</think><action>press red</action>", True, "press red"),
        ("<think>go</think>\n<action>  press red \n</action> trailing words", True, "press red"),
        ("<THINK>go</Think><ACTION>look</aCtIoN>", True, "look"),
        ("preamble <think>a</think> middle <action>look</action>", True, "look"),
        ("<action>look</action>", True, None),
        ("<action>look</action>", False, "look"),
        ("<think>a</think>", True, None),
        ("<think>a</think><action>look", True, None),
        ("<think>a</think>look</action>", True, None),
        ("<think>a</think></action>look<action>", True, None),
        ("<think>a</think><action>look</action><action>help</action>", True, None),
        ("<think>a</think><action>look<action>help</action>", True, None),
        ("<think>a</think><action>   </action>", True, None),
        ("<action>look</action><think>a</think>", True, None),
        ("<think>a <action>look</action></think>", True, None),
        ("<think>a</think><think>b</think><action>look</action>", True, None),
        ("<think>a<action>look</action>", True, None),
        ("<think>a</think>< action>look</action>", True, None),
        ("<think>a</think><action>look</action >", True, None),
        ("", True, None),
        ("", False, None),
    ],
)
def test_parse_action_cases(text: str, require_think: bool, expected: str | None) -> None:
    assert parse_action(text, require_think=require_think) == expected


def test_extract_think() -> None:
    assert extract_think("<think>\n step by step \n</think><action>look</action>") == "step by step"
    assert extract_think("<THINK></THINK>") == ""
    assert extract_think("<think>a</think><think>b</think>") is None
    assert extract_think("</think>a<think>") is None
    assert extract_think("no tags") is None


def _ascii_lower(text: str) -> str:
    """Lower-case ASCII letters only, keeping every offset (unlike str.lower)."""
    return text.translate(str.maketrans(string.ascii_uppercase, string.ascii_lowercase))


def reference_parse(text: str, require_think: bool) -> str | None:
    """An independent statement of the output format, by counting and finding tags."""
    low = _ascii_lower(text)
    if low.count("<action>") != 1 or low.count("</action>") != 1:
        return None
    start, end = low.index("<action>"), low.index("</action>")
    if end < start + len("<action>"):
        return None
    if require_think:
        if low.count("<think>") != 1 or low.count("</think>") != 1:
            return None
        think_start, think_end = low.index("<think>"), low.index("</think>")
        if think_end < think_start + len("<think>") or think_end + len("</think>") > start:
            return None
    return text[start + len("<action>") : end].strip() or None


TAGS = [
    "<think>",
    "</think>",
    "<action>",
    "</action>",
    "<THINK>",
    "</Think>",
    "<Action>",
    "</ACTION>",
    "<action",
    "action>",
    "</action",
    "< action>",
    "<actions>",
    "<>",
    "</>",
]
COMMANDS = ["press red", " PRESS   Red ", "look", "Look\n", "help", "fly", "search[<your query>]", "press"]
tagged_text = st.lists(
    st.one_of(st.sampled_from(TAGS), st.sampled_from(COMMANDS), st.text(max_size=12)), max_size=25
).map("".join)
any_output = st.one_of(st.text(), tagged_text)


def _case_variant(command: str) -> st.SearchStrategy[str]:
    flips = st.lists(st.booleans(), min_size=len(command), max_size=len(command))
    spaces = st.sampled_from(["", " ", "  ", "\n", "\t "])
    return st.builds(
        lambda f, left, right: left + "".join(c.upper() if u else c for c, u in zip(command, f)) + right,
        flips,
        spaces,
        spaces,
    )


tagless_text = st.text(alphabet=st.characters(exclude_characters="<"), max_size=30)
well_formed_output = st.builds(
    "{}<think>{}</think>{}<action>{}</action>{}".format,
    tagless_text,
    tagless_text,
    st.text(alphabet=" \n.", max_size=3),
    st.sampled_from(ADMISSIBLE + ["dance", "press  purple"]).flatmap(_case_variant),
    tagless_text,
)


@FUZZ
@given(text=any_output, require_think=st.booleans())
def test_parse_action_matches_reference_and_never_raises(text: str, require_think: bool) -> None:
    command = parse_action(text, require_think=require_think)
    assert command == reference_parse(text, require_think)
    if command is not None:
        assert command == command.strip() and command in text
    think = extract_think(text)
    assert think is None or think in text


@FUZZ
@given(text=well_formed_output)
def test_parse_action_reads_well_formed_outputs(text: str) -> None:
    inside = text[text.index("<action>") + len("<action>") : text.index("</action>")]
    assert parse_action(text) == inside.strip() != ""


@pytest.mark.parametrize(
    ("command", "expected"),
    [
        ("press red", "press red"),
        ("  PRESS \t RED ", "press red"),
        ("press redd", None),
        ("pressred", None),
        ("", None),
        ("search[Red Shoes  size 9]", "search[Red Shoes  size 9]"),
        ("SEARCH[ red ]", "search[red]"),
        ("search[]", None),
        ("search[  ]", None),
        ("search red", None),
        ("search [ red ]", "search[red]"),
        ("click[Buy Now]", "click[Buy Now]"),
        ("click[buy now]", "click[Buy Now]"),
        ("click[Sell]", None),
    ],
)
def test_match_admissible(command: str, expected: str | None) -> None:
    admissible = ["press red", "press green", "search[<your query>]", "click[Buy Now]", "click[< Prev]"]
    assert match_admissible(command, admissible) == expected


# --------------------------------------------------------------------------- action parsing wrapper


def test_penalty_accounting_over_an_episode() -> None:
    env = ActionParsingWrapper(TextGuessEnv(max_steps=6))
    _, info = env.reset(options={"task_id": TASK})
    assert (info["num_invalid_actions"], info["num_format_errors"]) == (0, 0)
    outputs = [
        respond("PRESS  Red"),  # admissible, other spelling
        "press green",  # no tags
        respond("press purple"),  # well formed, inadmissible
        "<think>x</think><action>look</action><action>help</action>",  # two action blocks
        respond("press green"),
        respond("press blue"),  # opens the chest
    ]
    expected = [
        # env reward, penalty, format_valid, admissible, parsed, executed, invalid count, format-error count
        (0.0, 0.0, True, True, "press red", "press red", 0, 0),
        (0.0, 0.1, False, False, None, "", 1, 1),
        (0.0, 0.1, True, False, "press purple", "", 2, 1),
        (0.0, 0.1, False, False, None, "", 3, 2),
        (0.0, 0.0, True, True, "press green", "press green", 3, 2),
        (1.0, 0.0, True, True, "press blue", "press blue", 3, 2),
    ]
    for output, (reward, penalty, valid, admissible, parsed, executed, n_invalid, n_format) in zip(outputs, expected):
        _, got_reward, terminated, _, info = env.step(output)
        assert got_reward == reward  # the env's own reward: the penalty is never subtracted from it
        assert info["invalid_penalty"] == penalty
        assert info["format_valid"] is valid and info["action_admissible"] is admissible
        assert info["parsed_action"] == parsed and info["executed_action"] == executed
        assert (info["num_invalid_actions"], info["num_format_errors"]) == (n_invalid, n_format)
    assert terminated and info["won"]

    _, info = env.reset(options={"task_id": TASK})
    assert info["num_invalid_actions"] == 0


@pytest.mark.parametrize("penalty", [0.0, 0.5, 2])
def test_configured_penalty_is_reported_not_subtracted(penalty: float) -> None:
    env = ActionParsingWrapper(TextGuessEnv(), invalid_action_penalty=penalty)
    env.reset(options={"task_id": TASK})
    _, reward, _, _, info = env.step("no action here")
    assert reward == 0.0 and info["invalid_penalty"] == pytest.approx(penalty)


def test_require_think_false_accepts_a_bare_action_block() -> None:
    env = ActionParsingWrapper(TextGuessEnv(), require_think=False)
    env.reset(options={"task_id": TASK})
    _, reward, _, _, info = env.step("<action>press red</action>")
    assert info["action_admissible"] and reward == 0.0 and info["state"].startswith("You press the red")


def _hundred_kilobytes(seed: int, alphabet: list[str]) -> str:
    rng = random.Random(seed)
    return "".join(rng.choice(alphabet) for _ in range(100_000))[:100_000]


LARGE_OUTPUTS = {
    "empty": "",
    "100 kB plain": "a" * 100_000,
    "100 kB unicode": _hundred_kilobytes(0, list("αβγ漢字🙂\u200b\u202e\x00\n ") + TAGS),
    "100 kB tag soup": _hundred_kilobytes(1, TAGS + COMMANDS),
    "100 kB reasoning then valid action": respond("press red", thought="hmm " * 25_000),
    "lone surrogate": "\ud800<think>\udfff</think><action>press red</action>",
    "unbalanced": "<think><think></think><action>press red",
    "nested tags": "<action><action>press red</action></action>",
}


@pytest.mark.parametrize("name", LARGE_OUTPUTS)
def test_adversarial_outputs_never_raise(name: str) -> None:
    output = LARGE_OUTPUTS[name]
    env = llm_env()
    prompt, reward, _, _, info = env.step(output)
    assert info["format_valid"] is (parse_action(output) is not None)
    assert reward == 0.0 and info["invalid_penalty"] == (0.0 if info["action_admissible"] else 0.1)
    assert env.observation_space.contains(prompt)
    assert env.action_space.contains(output)


def _played_alone(task_id: int, command: str) -> tuple[str, float]:
    """What the bare game returns for one command from the start of ``task_id``."""
    game = TextGuessEnv()
    game.reset(options={"task_id": task_id})
    obs, reward, *_ = game.step(command)
    return obs, reward


@FUZZ
@given(output=st.one_of(any_output, well_formed_output), task_id=st.integers(0, 26))
def test_any_output_is_executed_or_noop_with_matching_penalty(output: str, task_id: int) -> None:
    env = ActionParsingWrapper(TextGuessEnv())
    env.reset(options={"task_id": task_id})
    obs, reward, _, _, info = env.step(output)

    command = parse_action(output)
    assert info["format_valid"] is (command is not None)
    expected_executed = (command and match_admissible(command, ADMISSIBLE)) or ""
    assert info["executed_action"] == expected_executed
    assert info["action_admissible"] is (expected_executed != "")
    assert info["invalid_penalty"] == (0.0 if info["action_admissible"] else 0.1)
    alone_obs, alone_reward = _played_alone(task_id, expected_executed)
    assert obs == alone_obs
    assert reward == alone_reward


# --------------------------------------------------------------------------- prompt wrapper

ALFWORLD_STEP_1 = (
    "You are an expert agent operating in the ALFRED embodied environment. "
    "Your task is to: open the chest by pressing red, green, blue in this order. "
    "Your current observation is: You are in a vault. A chest stands in front of you, shut by a lock with 3 "
    "buttons: red, green and blue.\nYour task is to: open the chest by pressing red, green, blue in this order. "
    "Your admissible actions for the current situation are: ['look', 'press red', 'press green', 'press blue'].\n"
    "Now it's your turn to take an action.\n"
    "You should first reason step-by-step about the current situation. "
    "This reasoning process MUST be enclosed within <think> </think> tags.\n"
    "Once you've finished your reasoning, you should choose an admissible action for the current step "
    "and present it within <action> </action> tags."
)

ALFWORLD_STEP_3 = (
    "You are an expert agent operating in the ALFRED embodied environment. "
    "Your task is to: open the chest by pressing red, green, blue in this order. "
    "Prior to this step, you have already taken 2 step(s). "
    "Below are the most recent 2 observations and the corresponding actions you took: "
    "[Observation 1: '" + INTRO + "', Action 1: 'press red']\n"
    "[Observation 2: 'You press the red button. It clicks into place: 1 of 3 buttons are set.', Action 2: 'look']. "
    "You are now at step 3 and your current observation is: The chest is locked. 1 of 3 buttons are set. "
    "Your admissible actions for the current situation are: ['look', 'press red', 'press green', 'press blue'].\n"
    "Now it's your turn to take an action.\n"
    "You should first reason step-by-step about the current situation. "
    "This reasoning process MUST be enclosed within <think> </think> tags.\n"
    "Once you've finished your reasoning, you should choose an admissible action for the current step "
    "and present it within <action> </action> tags."
)


def test_alfworld_prompt_rendering() -> None:
    env = make_llm_env(TextGuessEnv())
    prompt, info = env.reset(options={"task_id": TASK})
    assert prompt == ALFWORLD_STEP_1
    assert info["observation"] == info["state"] == INTRO
    env.step(respond("Press Red"))
    prompt, _, _, _, info = env.step(respond("look"))
    assert prompt == ALFWORLD_STEP_3
    assert info["state"] == info["observation"] == "The chest is locked. 1 of 3 buttons are set."


WEBSHOP_WITH_HISTORY = (
    "You are an expert autonomous agent operating in the WebShop e-commerce environment. "
    "Your task is to: i need a red cotton t-shirt, and price lower than 20.00 dollars. "
    "Prior to this step, you have already taken 3 step(s). "
    "Below are the most recent 1 observations and the corresponding actions you took: "
    "[Observation 3: 'Results [SEP] < Prev [SEP] B01 [SEP] Red Tee [SEP] $12.99', Action 3: 'click[B01]']. "
    "You are now at step 4 and your current observation is: Red Tee [SEP] Price: $12.99 [SEP] Buy Now. "
    "Your admissible actions for the current situation are: ['click[< Prev]', 'click[Buy Now]'].\n"
    "Now it's your turn to take one action for the current step.\n"
    "You should first reason step-by-step about the current situation, then think carefully which "
    "admissible action best advances the shopping goal. "
    "This reasoning process MUST be enclosed within <think> </think> tags.\n"
    "Once you've finished your reasoning, you should choose an admissible action for the current step "
    "and present it within <action> </action> tags."
)

WEBSHOP_FIRST_STEP = (
    "You are an expert autonomous agent operating in the WebShop e-commerce environment. "
    "Your task is to: i need a red cotton t-shirt, and price lower than 20.00 dollars. "
    "Your current observation is: WebShop [SEP] Search. "
    "Your admissible actions for the current situation are: ['search[<your query>]'].\n"
    "Now it's your turn to take one action for the current step.\n"
    "You should first reason step-by-step about the current situation, then think carefully which "
    "admissible action best advances the shopping goal. "
    "This reasoning process MUST be enclosed within <think> </think> tags.\n"
    "Once you've finished your reasoning, you should choose an admissible action for the current step "
    "and present it within <action> </action> tags."
)


def test_webshop_prompt_rendering() -> None:
    task = "i need a red cotton t-shirt, and price lower than 20.00 dollars"
    first = WEBSHOP.render(
        task=task,
        observation="WebShop [SEP] Search",
        admissible_actions=["search[<your query>]"],
        history=(),
        step_count=0,
    )
    assert first == WEBSHOP_FIRST_STEP
    later = WEBSHOP.render(
        task=task + ".",
        observation="Red Tee [SEP] Price: $12.99 [SEP] Buy Now",
        admissible_actions=["click[< Prev]", "click[Buy Now]"],
        history=(HistoryEntry(3, "Results [SEP] < Prev [SEP] B01 [SEP] Red Tee [SEP] $12.99", "click[B01]"),),
        step_count=3,
    )
    assert later == WEBSHOP_WITH_HISTORY
    assert resolve_template("webshop") is WEBSHOP and resolve_template("alfworld") is ALFWORLD


def history_steps(prompt: str) -> list[int]:
    """Step numbers of the ``[Observation k: ...]`` lines of a prompt."""
    return [int(k) for k in re.findall(r"\[Observation (\d+): ", prompt)]


@pytest.mark.parametrize("history_length", [0, 1, 2, 3])
def test_history_window(history_length: int) -> None:
    env = make_llm_env(TextGuessEnv(max_steps=10), history_length=history_length)
    env.reset(options={"task_id": TASK})
    for step in range(1, 6):
        prompt, *_ = env.step(respond("look"))
        shown = list(range(max(1, step - history_length + 1), step + 1)) if history_length else []
        assert history_steps(prompt) == shown
        assert (f"you have already taken {step} step(s)" in prompt) is bool(history_length)
        if history_length:
            assert f"Below are the most recent {len(shown)} observations" in prompt
            assert f"You are now at step {step + 1} and" in prompt
    prompt, _ = env.reset(options={"task_id": TASK})
    assert history_steps(prompt) == [] and prompt == ALFWORLD_STEP_1


def test_render_prompt_drops_the_oldest_history_turns_first() -> None:
    env = make_llm_env(TextGuessEnv(max_steps=10), history_length=3)
    with pytest.raises(ValueError, match="reset"):
        env.render_prompt(0)
    assert env.reset(options={"task_id": TASK})[0] == env.render_prompt(0) and env.history_turns == 0
    for _ in range(4):
        prompt, *_ = env.step(respond("look"))
    assert env.history_turns == 3 and env.render_prompt(3) == prompt
    assert history_steps(env.render_prompt(2)) == [3, 4] and history_steps(env.render_prompt(1)) == [4]
    shortest = env.render_prompt(0)
    assert history_steps(shortest) == [] and "You are now at step" not in shortest
    assert "0 of 3 buttons are set" in shortest  # the current observation stays
    with pytest.raises(ValueError, match=r"history_turns must be in \[0, 3\], got 4"):
        env.render_prompt(4)
    # The history itself is untouched: the next prompt shows the full window again.
    prompt, *_ = env.step(respond("look"))
    assert history_steps(prompt) == [3, 4, 5]


def test_history_records_the_parsed_command() -> None:
    env = llm_env(history_length=3)
    env.step(respond("  PRESS   RED "))
    env.step("I refuse to use tags")
    prompt, *_ = env.step(respond("Fly Away"))
    assert "Action 1: 'press red']" in prompt
    assert "Action 2: '']" in prompt
    assert "Action 3: 'Fly Away']" in prompt


def test_prompt_wrapper_without_action_parser_records_the_given_command() -> None:
    env = PromptWrapper(TextGuessEnv(), history_length=1)
    env.reset(options={"task_id": TASK})
    prompt, *_ = env.step("help")
    assert "Action 1: 'help']" in prompt


def test_custom_template() -> None:
    template = "{task_description} | {current_observation} | {admissible_actions} | {action_history}"
    env = llm_env(template=template, history_length=1)
    env.step(respond("press red"))
    prompt, *_ = env.step(respond("look"))
    assert prompt == (
        "open the chest by pressing red, green, blue in this order | The chest is locked. 1 of 3 buttons are set"
        " | 'look', 'help', 'press red', 'press green', 'press blue'"
        " | [Observation 2: 'You press the red button. It clicks into place: 1 of 3 buttons are set.',"
        " Action 2: 'look']"
    )


text_values = st.text(max_size=60)


@FUZZ
@given(
    task=text_values,
    observation=text_values,
    actions=st.lists(text_values, max_size=5),
    history=st.lists(st.tuples(text_values, text_values), max_size=3),
    template=st.sampled_from(
        [
            ALFWORLD,
            WEBSHOP,
            PromptTemplate.from_format_string("{current_observation}{action_history}{available_actions}"),
        ]
    ),
)
def test_rendering_arbitrary_text_never_raises(task, observation, actions, history, template) -> None:
    entries = [HistoryEntry(k + 1, obs, act) for k, (obs, act) in enumerate(history)]
    prompt = template.render(
        task=task, observation=observation, admissible_actions=actions, history=entries, step_count=len(entries)
    )
    stripped = observation.rstrip()
    assert (stripped[:-1] if stripped.endswith(".") else stripped) in prompt
    for entry in entries:
        assert f"[Observation {entry.step}: '{entry.observation}', Action {entry.step}: '{entry.action}']" in prompt
    if template is not ALFWORLD:
        for action in actions:
            assert f"'{action}'" in prompt


@FUZZ
@given(
    buttons=st.lists(
        st.text(alphabet=st.characters(exclude_categories=["Z", "Cc", "Cs"]), min_size=1, max_size=8),
        min_size=2,
        max_size=4,
        unique_by=str.casefold,
    ),
    outputs=st.lists(any_output, min_size=1, max_size=6),
)
def test_full_stack_with_unicode_game_text_never_raises(buttons: list[str], outputs: list[str]) -> None:
    env = make_llm_env(TextGuessEnv(code_length=2, max_steps=len(outputs) + 2, buttons=buttons))
    prompt, info = env.reset(seed=0)
    for output in outputs + [respond(f"press {buttons[0]}")]:
        prompt, reward, terminated, truncated, info = env.step(output)
        assert info["observation"].rstrip(".") in prompt
        assert reward <= 1.0
        if terminated or truncated:
            break


# --------------------------------------------------------------------------- configuration errors


class BareGame(gym.Env):
    """A game missing the contract's attributes and info keys."""

    observation_space = TextSpace()
    action_space = TextSpace()

    def reset(self, *, seed=None, options=None):
        return "start", {}

    def step(self, action):
        return "same", 0.0, False, False, {}


class NoopGame(BareGame):
    noop_action = ""


def test_configuration_errors_are_clear() -> None:
    with pytest.raises(ValueError, match="noop_action"):
        ActionParsingWrapper(BareGame())
    with pytest.raises(ValueError, match="no prompt template"):
        PromptWrapper(BareGame())
    with pytest.raises(ValueError, match="unknown prompt template 'alfwrld'"):
        PromptWrapper(TextGuessEnv(), template="alfwrld")
    with pytest.raises(ValueError, match="unknown slots"):
        PromptWrapper(TextGuessEnv(), template="{task} {current_observation}")
    with pytest.raises(ValueError, match="positional"):
        PromptWrapper(TextGuessEnv(), template="{} {current_observation}")
    with pytest.raises(ValueError, match="not a valid format string"):
        PromptWrapper(TextGuessEnv(), template="{current_observation")
    with pytest.raises(ValueError, match="cannot be rendered"):
        PromptWrapper(TextGuessEnv(), template="{step_count:q}")
    for bad_length in (-1, 1.5, True):
        with pytest.raises(ValueError, match="history_length"):
            PromptWrapper(TextGuessEnv(), history_length=bad_length)
    for bad_penalty in (-0.1, math.nan, math.inf, "0.1"):
        with pytest.raises(ValueError, match="invalid_action_penalty"):
            ActionParsingWrapper(TextGuessEnv(), invalid_action_penalty=bad_penalty)
    with pytest.raises(ValueError, match="only apply when the env is given by id"):
        make_llm_env(TextGuessEnv(), code_length=2)
    with pytest.raises(ValueError, match="info has no 'admissible_actions'"):
        ActionParsingWrapper(NoopGame()).reset()
    with pytest.raises(ValueError, match="info has no 'task'"):
        PromptWrapper(NoopGame(), template="alfworld").reset()
    with pytest.raises(TypeError, match="expects the LLM output as a str"):
        llm_env().step(None)


def test_make_llm_env_by_id_passes_env_kwargs() -> None:
    env = make_llm_env("TextGuess-v0", code_length=2, history_length=1, invalid_action_penalty=0.25)
    _, info = env.reset(seed=3)
    assert env.unwrapped.code_length == 2 and 0 <= info["task_id"] < 9
    _, reward, _, _, info = env.step("")
    assert reward == 0.0 and info["invalid_penalty"] == 0.25
    assert isinstance(env, PromptWrapper) and isinstance(env.env, ActionParsingWrapper)


# --------------------------------------------------------------------------- Gymnasium's conventions

#: The checker's note that it was handed a wrapped env: these tests check the LLM-facing stack on purpose.
WRAPPED_NOTE = "is different from the unwrapped version"


def assert_follows_gymnasium(env: gym.Env) -> None:
    """Gymnasium's checker passes on the LLM-facing ``env`` without a warning, and its spec rebuilds it."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        check_env(env, skip_render_check=True)
    assert not [str(w.message) for w in caught if WRAPPED_NOTE not in str(w.message)]
    again = gym.make(env.spec)
    assert again.spec == env.spec and [w.class_name() for w in (again, again.env)] == [
        "PromptWrapper",
        "ActionParsingWrapper",
    ]
    assert again.reset(seed=4) == env.reset(seed=4)
    output = respond(again.unwrapped.noop_action)
    assert again.step(output) == env.step(output)


@pytest.mark.parametrize(
    ("env_id", "env_kwargs"),
    [
        ("tests.text_env:TextGuess-v0", {}),
        (HOUSEHOLD_ID, {}),
        (WEBSHOP_ID, {"split": "test"}),
        (ALFWORLD_ID, {"num_games": 1}),
    ],
)
def test_llm_facing_envs_pass_gymnasiums_checker_and_rebuild_from_their_spec(env_id, env_kwargs, tmp_path) -> None:
    if env_id == ALFWORLD_ID:
        env_kwargs = {**env_kwargs, "cache_dir": tmp_path}
    env = make_llm_env(env_id, history_length=1, invalid_action_penalty=0.25, require_think=False, **env_kwargs)
    assert env.spec.additional_wrappers[-1].kwargs == {"template": None, "history_length": 1, "max_action_chars": 256}
    assert env.spec.additional_wrappers[-2].kwargs["invalid_action_penalty"] == 0.25
    assert_follows_gymnasium(env)


def test_alfworld_with_the_memory_template_shows_what_the_agent_has_seen(tmp_path) -> None:
    env = make_llm_env(ALFWORLD_ID, template="alfworld-memory", require_think=False, num_games=1, cache_dir=tmp_path)
    prompt, info = env.reset(seed=0)
    assert (
        info["memory"].startswith("Seen: nothing.\nNot yet seen: ") and f"\n{info['memory']}\nObservation: " in prompt
    )
    go = next(action for action in info["admissible_actions"] if action.startswith("go to "))
    prompt, *_, info = env.step(respond(go))
    seen, unseen = info["memory"].split("\n")
    receptacle = go.removeprefix("go to ")
    closed = f"The {receptacle} is closed." in info["observation"]
    assert f"\n{info['memory']}\nObservation: " in prompt and (receptacle in unseen) == closed != (receptacle in seen)
    assert_follows_gymnasium(env)


def test_alfworld_with_the_inventory_template_shows_what_the_agent_carries(tmp_path) -> None:
    assert resolve_template("alfworld-inventory").info_slots == ("inventory",)
    settings = {"num_games": 2, "cache_dir": tmp_path, "expert": "search"}
    env = make_llm_env(ALFWORLD_ID, template="alfworld-inventory", require_think=False, **settings)
    prompt, info = env.reset(seed=0)
    assert "\nCarrying: nothing.\nObservation: " in prompt and "Actions:" not in prompt
    carried = []
    while not info["won"]:
        prompt, *_, info = env.step(respond(info["expert_action"]))
        carried.append(info["inventory"])
        assert f"\nCarrying: {info['inventory']}.\nObservation: " in prompt
    assert any(re.fullmatch(r"[a-z]+ \d+", name) for name in carried)
    with pytest.raises(ValueError, match=r"shows \{inventory\}, but .* gives no str info\['inventory'\]"):
        make_llm_env(TextGuessEnv(), template="alfworld-inventory", require_think=False).reset(seed=0)
    assert_follows_gymnasium(env)


def test_alfworld_with_the_room_template_shows_the_memory_and_the_inventory_without_history(tmp_path) -> None:
    assert resolve_template("alfworld-room").info_slots == ("memory", "inventory")
    settings = {"num_games": 2, "cache_dir": tmp_path, "expert": "search"}
    env = make_llm_env(ALFWORLD_ID, template="alfworld-room", history_length=0, require_think=False, **settings)
    prompt, info = env.reset(seed=0)
    while not info["won"]:
        assert f"\n{info['memory']}\nCarrying: {info['inventory']}.\nObservation: " in prompt
        assert "Previous steps:" not in prompt and "Actions:" not in prompt
        prompt, *_, info = env.step(respond(info["expert_action"]))


def test_a_spec_with_a_custom_template_rebuilds_the_same_prompts() -> None:
    env = make_llm_env("tests.text_env:TextGuess-v0", template="alfworld-numbered")
    assert env.spec.to_json()  # plain settings: the spec serialises
    assert_follows_gymnasium(env)


# --------------------------------------------------------------------------- TextSpace


@FUZZ
@given(text=st.text())
def test_text_space_contains_any_string(text: str) -> None:
    assert TextSpace().contains(text)


def test_text_space_bounds_and_flattening() -> None:
    space = TextSpace()
    for text in ("", "\ud800", "漢字🙂\x00", "x" * 100_000):
        assert text in space
    assert b"bytes" not in space and None not in space and 3 not in space
    short = TextSpace(4, min_length=1)
    assert "abcd" in short and "abcde" not in short and "" not in short
    assert short.sample() in short
    assert short == TextSpace(4, min_length=1) and short != TextSpace(5, min_length=1)
    assert isinstance(space, gym.spaces.Text)
    with pytest.raises(ValueError, match="cannot be flattened"):
        flatdim(space)
    with pytest.raises(ValueError, match="cannot be flattened"):
        flatten(space, "abc")
    with pytest.raises(ValueError, match="min_length <= max_length"):
        TextSpace(3, min_length=4)
    with pytest.raises(ValueError, match="must be an int"):
        TextSpace(2.5)


# --------------------------------------------------------------------------- TextGuess game


def test_text_guess_has_exactly_one_winning_press_sequence() -> None:
    presses = [f"press {button}" for button in ("red", "green", "blue")]
    for task_id in (0, TASK, 26):
        winners = []
        for sequence in itertools.product(presses, repeat=3):
            game = TextGuessEnv()
            game.reset(options={"task_id": task_id})
            for command in sequence:
                _, reward, terminated, truncated, info = game.step(command)
                if terminated or truncated:
                    break
            if info["won"]:
                assert reward == 1.0 and terminated and not truncated
                winners.append(sequence)
        assert winners == [tuple(f"press {b}" for b in game.code(task_id))]


def test_text_guess_contract_and_rules() -> None:
    game = gym.make("TextGuess-v0")
    obs, info = game.reset(seed=7)
    assert set(info) == {"admissible_actions", "task", "state", "won", "task_id", "step", "expert_action"}
    assert info["state"] == obs and info["admissible_actions"] == ADMISSIBLE and info["step"] == 0
    assert game.reset(seed=7)[1]["task_id"] == info["task_id"]
    assert game.unwrapped.noop_action == "" and game.unwrapped.prompt_template == "alfworld"

    game.reset(options={"task_id": TASK})
    assert game.step("")[0] == "Nothing happens."
    assert game.step("look")[0] == "The chest is locked. 0 of 3 buttons are set."
    _, reward, terminated, truncated, info = game.step("help")
    assert (reward, terminated, truncated, info["step"]) == (0.0, False, False, 3)
    assert game.step("dance")[0] == "Nothing happens."  # any other command: a step that changes nothing
    _, reward, terminated, truncated, info = game.step("press red")
    assert truncated and not terminated and not info["won"] and info["admissible_actions"] == []
    with pytest.raises(ValueError, match="episode is over"):
        game.step("look")

    game.reset(options={"task_id": TASK})
    obs, reward, terminated, _, info = game.step("press blue")
    assert terminated and reward == 0.0 and "jams" in obs and not info["won"]


def test_text_guess_rejects_bad_settings() -> None:
    with pytest.raises(ValueError, match="code_length"):
        TextGuessEnv(code_length=0)
    with pytest.raises(ValueError, match="max_steps"):
        TextGuessEnv(code_length=3, max_steps=2)
    with pytest.raises(ValueError, match="one-word"):
        TextGuessEnv(buttons=("red", "dark blue"))
    with pytest.raises(ValueError, match="differ ignoring case"):
        TextGuessEnv(buttons=("red", "RED"))
    with pytest.raises(ValueError, match="task_id"):
        TextGuessEnv().reset(options={"task_id": 27})


def test_the_compact_template_lists_one_action_per_line_and_takes_the_command():
    env = make_llm_env(TextGuessEnv(code_length=2, max_steps=10), template="alfworld-compact", require_think=False)
    prompt, info = env.reset(seed=0, options={"task_id": 5})  # code: green, blue
    assert "Actions:\nlook\npress red\npress green\npress blue\n" in prompt
    assert prompt.endswith("as <action>action</action>.") and "<think>" not in prompt
    prompt, _, _, _, info = env.step("<action>press green</action>")
    assert info["action_admissible"] and "Action 1: 'press green']" in prompt
    _, _, _, _, info = env.step("<action>3</action>")  # numbers name nothing here
    assert info["format_valid"] and not info["action_admissible"]
    with pytest.raises(ValueError, match="action_list must be one of"):
        PromptTemplate(first_step="{admissible_actions}", with_history="{admissible_actions}", action_list="table")


def test_the_unlisted_template_shows_no_actions_nor_the_answer_form_and_its_choices_are_every_listed_command():
    env = make_llm_env(TextGuessEnv(code_length=2, max_steps=10), template="alfworld-unlisted", require_think=False)
    prompt, info = env.reset(seed=0, options={"task_id": 5})  # code: green, blue
    assert "Actions:" not in prompt and "press red" not in prompt
    assert prompt.startswith("Task: open the chest by pressing green, blue in this order.\nObservation: ")
    # Nor the answer's form: the held answers write it.
    assert "Answer" not in prompt and "<action>" not in prompt and prompt.endswith(".")
    answers = answer_choices(info["admissible_actions"], template=resolve_template("alfworld-unlisted"))
    assert answers == [f"<action>{command}</action>" for command in ("look", "press red", "press green", "press blue")]
    prompt, _, _, _, info = env.step(answers[2])
    assert info["action_admissible"] and "Action 1: 'press green']" in prompt and "press blue" not in prompt


class RememberingGuess(TextGuessEnv):
    """The button game with an ``info["memory"]`` naming the buttons pressed so far."""

    def reset(self, *, seed=None, options=None):
        self.pressed = []
        observation, info = super().reset(seed=seed, options=options)
        return observation, {**info, "memory": "Pressed: none."}

    def step(self, action):
        observation, reward, terminated, truncated, info = super().step(action)
        self.pressed.append(action.removeprefix("press "))
        return observation, reward, terminated, truncated, {**info, "memory": f"Pressed: {', '.join(self.pressed)}."}


def test_the_memory_template_shows_the_envs_memory_before_the_observation_and_needs_one():
    assert resolve_template("alfworld-memory").info_slots == ("memory",)
    assert resolve_template("alfworld-unlisted").info_slots == ()
    env = make_llm_env(RememberingGuess(code_length=2, max_steps=10), template="alfworld-memory", require_think=False)
    prompt, _ = env.reset(seed=0, options={"task_id": 5})
    assert prompt.startswith(
        "Task: open the chest by pressing green, blue in this order.\nPressed: none.\nObservation: "
    )
    assert "Actions:" not in prompt
    prompt, *_ = env.step("<action>press green</action>")
    assert "Action 1: 'press green']\nPressed: green.\nObservation: You press the green button." in prompt
    custom = make_llm_env(RememberingGuess(), template="{memory} | {current_observation}", require_think=False)
    assert custom.reset(seed=0)[0].startswith("Pressed: none. | ")
    with pytest.raises(ValueError, match=r"shows \{memory\}, but .* gives no str info\['memory'\]"):
        make_llm_env(TextGuessEnv(), template="alfworld-memory", require_think=False).reset(seed=0)


def test_the_numbered_template_numbers_the_listed_actions_and_accepts_a_number_or_the_command():
    env = make_llm_env(TextGuessEnv(code_length=2, max_steps=10), template="alfworld-numbered", require_think=False)
    prompt, info = env.reset(seed=0, options={"task_id": 5})  # code: green, blue
    # "help" is hidden, so the listed actions are look, press red, press green, press blue.
    assert "Actions:\n1: look\n2: press red\n3: press green\n4: press blue\n" in prompt
    assert prompt.startswith("Task: open the chest by pressing green, blue in this order.\n")
    assert prompt.endswith("<action>number</action>.") and "<think>" not in prompt
    prompt, _, _, _, info = env.step("<action>3</action>")
    assert info["action_admissible"] and info["executed_action"] == "press green"
    assert "Previous steps:\n[Observation 1: " in prompt and "Action 1: 'press green']" in prompt
    for invalid in ("<action>5</action>", "<action>0</action>", "<action>٣</action>", "<action>-1</action>"):
        _, _, _, _, info = env.step(invalid)
        assert info["format_valid"] and not info["action_admissible"], invalid
    _, reward, terminated, _, info = env.step("<action>press blue</action>")
    assert info["action_admissible"] and reward == 1.0 and terminated


def test_numbers_name_nothing_under_a_template_that_does_not_number():
    env = make_llm_env(TextGuessEnv(code_length=2), require_think=False)
    env.reset(seed=0, options={"task_id": 5})
    _, _, _, _, info = env.step("<action>3</action>")
    assert info["format_valid"] and not info["action_admissible"]


@pytest.mark.parametrize(
    "template", ["alfworld", "alfworld-compact", "alfworld-numbered", "alfworld-unlisted", "alfworld-memory"]
)
@pytest.mark.parametrize("require_think", [True, False])
def test_format_response_writes_what_the_parser_reads_back(template, require_think):
    prompt_template = resolve_template(template)
    admissible = ["help", "look", "press red", "press green"]
    for command in admissible[1:]:
        response = format_response(command, admissible, template=prompt_template, require_think=require_think)
        parsed = parse_action(response, require_think=require_think)
        if prompt_template.numbered_actions:
            assert parsed == str(admissible[1:].index(command) + 1)
        else:
            assert parsed == command
        assert ("<think>" in response) == require_think


@pytest.mark.parametrize("template", ["alfworld-compact", "alfworld-numbered"])
def test_answer_choices_are_every_listed_command_as_the_parser_reads_it(template):
    env = make_llm_env(TextGuessEnv(code_length=2), template=template, require_think=False)
    _, info = env.reset(seed=0, options={"task_id": 5})
    listed = [action for action in info["admissible_actions"] if action != "help"]  # the template hides help
    answers = answer_choices(info["admissible_actions"], template=resolve_template(template))
    assert len(answers) == len(listed) == 4
    for answer, command in zip(answers, listed, strict=True):
        twin = make_llm_env(TextGuessEnv(code_length=2), template=template, require_think=False)
        twin.reset(seed=0, options={"task_id": 5})
        _, _, _, _, played = twin.step(answer)
        assert played["action_admissible"] and played["executed_action"] == command


def test_answer_choices_leave_free_text_commands_and_empty_lists_free():
    compact = resolve_template("alfworld-compact")
    assert answer_choices(["search[<your query>]", "click[back]"], template=compact) is None
    assert answer_choices(["help"], template=compact) is None  # nothing listed
    assert answer_choices(["click[back]", "click[next >]"], template=compact) == [
        "<action>click[back]</action>",
        "<action>click[next >]</action>",
    ]


# --------------------------------------------------------------------------- near misses and echoes


@pytest.mark.parametrize(
    "command, expected",
    [
        ("'press red'", ("press red", True)),
        ('"press red"', ("press red", True)),
        ("press red.", ("press red", True)),
        ("'press red'.", ("press red", True)),
        ("'press red.'", ("press red", True)),
        ("1. press red", ("press red", True)),
        ("12) press red", ("press red", True)),
        ("- press red", ("press red", True)),
        ("* 'press red'.", ("press red", True)),
        ("press red", ("press red", False)),
        ("press red..", ("press red.", True)),  # one full stop only
        ("''press red''", ("'press red'", True)),  # one pair of quotes only
        ("'press red\"", ("'press red\"", False)),  # quotes that do not match
        ("'.'", ("'.'", False)),  # nothing would be left
        ("-press red", ("-press red", False)),  # a prefix needs its space
    ],
)
def test_repair_command(command: str, expected: tuple[str, bool]) -> None:
    assert repair_command(command) == expected


@pytest.mark.parametrize("command", ["'press red'", "press red.", "1. press red", "- press red", '"press red".'])
def test_near_miss_commands_are_executed_without_penalty_and_counted(command: str) -> None:
    env = ActionParsingWrapper(TextGuessEnv())
    env.reset(options={"task_id": TASK})
    _, _, _, _, info = env.step(respond(command))
    assert info["action_admissible"] and info["action_repaired"] and info["invalid_penalty"] == 0.0
    assert info["executed_action"] == "press red" and info["num_invalid_actions"] == 0


@pytest.mark.parametrize(
    "command", ["press red!", "'press purple'", "press red, then blue.", "> press red", "(press red)"]
)
def test_other_near_misses_stay_invalid(command: str) -> None:
    env = ActionParsingWrapper(TextGuessEnv())
    env.reset(options={"task_id": TASK})
    _, _, _, _, info = env.step(respond(command))
    assert not info["action_admissible"] and not info["action_repaired"] and info["invalid_penalty"] == 0.1


def test_an_admissible_command_as_written_is_not_counted_as_repaired() -> None:
    env = ActionParsingWrapper(TextGuessEnv())
    env.reset(options={"task_id": TASK})
    assert env.step(respond("press red"))[4]["action_repaired"] is False


def test_a_lone_surrogate_in_an_output_is_not_echoed_into_the_next_prompt() -> None:
    from tokenizers import Tokenizer, models
    from transformers import PreTrainedTokenizerFast

    tokenizer = PreTrainedTokenizerFast(tokenizer_object=Tokenizer(models.WordLevel({"[UNK]": 0}, unk_token="[UNK]")))
    env = llm_env()
    prompt, *_ = env.step(respond("press \ud800red"))
    assert "\ud800" not in prompt and "Action 1: 'press ?red']" in prompt
    prompt.encode("utf-8")
    tokenizer(prompt)  # raised TypeError (TextEncodeInput) with the surrogate


def test_a_huge_output_is_echoed_capped() -> None:
    env = llm_env()
    prompt, *_ = env.step(respond("x" * 1_000_000))
    assert len(prompt) < 2_000
    assert f"Action 1: '{'x' * (DEFAULT_MAX_ACTION_CHARS - len(CUT_MARK))}{CUT_MARK}']" in prompt
    assert "Action 1: 'xx [...]']" in llm_env(max_action_chars=8).step(respond("x" * 100))[0]
    with pytest.raises(ValueError, match="max_action_chars must be an int >= 1"):
        llm_env(max_action_chars=0)


def test_prompt_wrapper_alone_caps_the_echo_of_its_raw_action_too() -> None:
    env = PromptWrapper(TextGuessEnv(), history_length=1, max_action_chars=10)
    env.reset(options={"task_id": TASK})
    prompt, *_ = env.step("h" * 50)
    assert f"Action 1: 'hhhh{CUT_MARK}']" in prompt


def test_llm_env_settings_are_the_wrapper_keywords_and_unknown_keys_are_named() -> None:
    assert set(LLM_ENV_SETTINGS) == {
        "template",
        "history_length",
        "max_action_chars",
        "invalid_action_penalty",
        "require_think",
    }
    check_llm_env_settings({"require_think": False})
    with pytest.raises(ValueError, match=r"llm_env_config has unknown keys \['max_step'\]; allowed: template"):
        check_llm_env_settings({"max_step": 3, "history_length": 1})
