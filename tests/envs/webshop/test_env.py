"""WebShopEnv: pages, actions, info contract, invalid input and limits."""

from __future__ import annotations

import re

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import envs  # noqa: F401  (registers WebShop-v0)
from envs.llm_wrappers import make_llm_env
from envs.webshop.env import MAX_STEPS, WebShopEnv, parse_action
from envs.webshop.policies import best_options
from envs.webshop.reward import purchase_reward

PRODUCT_CLICK = re.compile(r"click\[b0[0-9a-z]{8}\]")
INFO_KEYS = {
    "won",
    "score",
    "step",
    "task_id",
    "task",
    "task_type",
    "state",
    "admissible_actions",
    "action_valid",
    "page",
    "purchase",
}


@pytest.fixture()
def env():
    return WebShopEnv(split="test")


def _search_goal(env, task_id=0):
    _, info = env.reset(options={"task_id": task_id})
    return env.step(f"search[{info['task']}]")


def _product_clicks(info):
    return [action for action in info["admissible_actions"] if PRODUCT_CLICK.fullmatch(action)]


def _first_product_click(info):
    return _product_clicks(info)[0]


def test_registered_and_speaking_text():
    env = gym.make("WebShop-v0", split="test")
    obs, info = env.reset(seed=3)
    assert set(info) == INFO_KEYS
    assert env.observation_space.contains(obs)
    assert env.action_space.contains("click[☃ 😀 ü]") and env.action_space.contains("")
    assert not env.action_space.contains(b"bytes")
    assert env.unwrapped.noop_action == ""


def test_search_page_observation_and_info(env):
    obs, info = env.reset(options={"task_id": 5})
    goal = env.goals[5]
    assert obs == f"WebShop [SEP] Instruction: [SEP] {goal.instruction_text} [SEP] Search"
    assert info["state"] == "WebShop [SEP] Search"
    assert info["admissible_actions"] == ["search[<your query>]"]
    assert (info["task_id"], info["task"], info["task_type"]) == (5, goal.instruction_text, goal.category)
    assert (info["won"], info["score"], info["step"], info["page"], info["purchase"]) == (False, 0.0, 0, "search", None)


def test_task_id_pins_the_goal_and_seed_draws_reproducibly(env):
    assert env.reset(options={"task_id": 7})[1]["task"] == env.reset(options={"task_id": 7})[1]["task"]
    assert env.reset(options={"task_id": np.int64(7)})[1]["task_id"] == 7
    drawn = {env.reset(seed=seed)[1]["task_id"] for seed in range(20)}
    assert len(drawn) > 1
    assert env.reset(seed=11)[0] == env.reset(seed=11)[0]


@pytest.mark.parametrize("task_id", [-1, 10**6, 1.0, "3", True])
def test_bad_task_ids_are_rejected(env, task_id):
    with pytest.raises(ValueError, match="task_id must be an integer"):
        env.reset(options={"task_id": task_id})
    with pytest.raises(ValueError, match="task_id must be an integer"):
        env.queue_tasks([0, task_id])


def test_queued_tasks_are_played_in_order_before_random_draws(env):
    assert env.task_ids == list(range(env.num_tasks))
    env.queue_tasks([4, 2])
    assert [env.reset()[1]["task_id"] for _ in range(2)] == [4, 2]
    assert env.reset(options={"task_id": 9})[1]["task_id"] == 9
    with pytest.raises(ValueError, match="unknown reset options \\['goal'\\]"):
        env.reset(options={"goal": 1})


def test_results_pages_paginate_ten_at_a_time(env):
    obs, _, _, _, info = _search_goal(env)
    instruction = env.goal.instruction_text
    assert obs == f"Instruction: [SEP] {instruction} [SEP] {info['state']}"
    assert info["state"].startswith("Back to Search [SEP] Page 1 (Total results: 50) [SEP] Next > [SEP] B")
    assert len(_product_clicks(info)) == 10
    assert info["admissible_actions"][:2] == ["click[back to search]", "click[next >]"]
    for page in range(2, 6):
        _, _, _, _, info = env.step("click[next >]")
        assert f"Page {page} (Total results: 50)" in info["state"] and "< Prev" in info["state"]
    assert "click[next >]" not in info["admissible_actions"]
    assert env.step("click[next >]")[4]["action_valid"] is False
    assert "Page 4 (Total" in env.step("click[< prev]")[4]["state"]


def test_item_page_lists_options_and_buttons(env):
    _search_goal(env)
    asin = env.goal.asin
    product = env.shop.catalog.get(asin)
    _, _, _, _, info = env.step(f"click[{asin.lower()}]")
    option_text = " [SEP] ".join(f"{name} [SEP] {' [SEP] '.join(values)}" for name, values in product.options.items())
    assert info["state"] == (
        f"Back to Search [SEP] < Prev [SEP] {option_text} [SEP] {product.title} [SEP] Price: {product.price_tag} "
        f"[SEP] Rating: {product.rating} [SEP] Description [SEP] Features [SEP] Reviews [SEP] Buy Now"
    )
    buttons = [
        "click[back to search]",
        "click[< prev]",
        "click[description]",
        "click[features]",
        "click[reviews]",
        "click[buy now]",
    ]
    values = [f"click[{value}]" for values in product.options.values() for value in values]
    assert info["admissible_actions"] == buttons + values


def test_sub_pages_and_back_navigation(env):
    _search_goal(env)
    env.step("click[next >]")
    click = _first_product_click(env.step("click[< prev]")[4])
    item_state = env.step(click)[4]["state"]
    shown = env.shop.catalog.get(parse_action(click)[1].upper())
    assert shown.title in item_state
    description = env.step("click[Description]")[4]
    assert description["state"] == f"Back to Search [SEP] < Prev [SEP] {shown.description}"
    assert env.step("click[< prev]")[4]["state"] == item_state
    features = env.step("click[features]")[4]["state"]
    assert features == " [SEP] ".join(["Back to Search", "< Prev", *shown.bullet_points])
    env.step("click[< prev]")
    reviews = env.step("click[reviews]")[4]["state"]
    assert f'"{shown.reviews[0].title}" [SEP] {shown.reviews[0].score:g} [SEP] {shown.reviews[0].body}' in reviews
    env.step("click[< prev]")
    assert env.step("click[< prev]")[4]["state"].startswith("Back to Search [SEP] Page 1 (Total results")
    assert env.step("click[back to search]")[4]["state"] == "WebShop [SEP] Search"


def test_buying_pays_the_reward_and_ends_the_episode(env):
    _search_goal(env, task_id=2)
    goal = env.goal
    product = env.shop.catalog.get(goal.asin)
    env.step(f"click[{goal.asin}]")  # upper case works: clicks are case-insensitive
    for value in best_options(product, goal).values():
        assert env.step(f"click[{value}]")[4]["action_valid"]
    obs, reward, terminated, truncated, info = env.step("click[Buy Now]")
    expected = purchase_reward(product, goal, env.shop.catalog.prices[goal.asin], list(goal.options))
    assert reward == info["score"] == expected.total == 1.0
    assert (terminated, truncated, info["won"], info["page"]) == (True, False, True, "done")
    assert info["purchase"]["asin"] == goal.asin and info["purchase"]["option_matches"] == len(goal.options)
    assert obs.endswith("Thank you for shopping with us! [SEP] Your score (min 0.0, max 1.0) [SEP] 1.0")
    assert info["admissible_actions"] == []
    after = env.step("click[buy now]")
    assert after[1:4] == (0.0, True, False) and after[4]["action_valid"] is False and after[0] == obs


def test_buying_without_options_scores_partially(env):
    _search_goal(env, task_id=4)
    env.step(f"click[{env.goal.asin.lower()}]")
    _, reward, terminated, _, info = env.step("click[buy now]")
    goal = env.goal
    denominator = len(goal.attributes) + len(goal.options) + 1
    assert terminated and reward == pytest.approx((len(goal.attributes) + 1) / denominator)
    assert info["won"] is False


def _buy(env, task_id, with_options):
    _search_goal(env, task_id=task_id)
    goal = env.goal
    env.step(f"click[{goal.asin}]")
    if with_options:
        for value in best_options(env.shop.catalog.get(goal.asin), goal).values():
            env.step(f"click[{value}]")
    return env.step("click[buy now]")


def test_success_reward_pays_one_for_a_perfect_purchase_and_reports_the_score():
    env = WebShopEnv(split="test", reward="success")
    _, reward, terminated, _, info = _buy(env, task_id=2, with_options=True)
    assert (reward, info["score"], info["won"], terminated) == (1.0, 1.0, True, True)
    _, reward, terminated, _, info = _buy(env, task_id=4, with_options=False)
    partial = WebShopEnv(split="test", reward="score")
    _, score_reward, _, _, score_info = _buy(partial, task_id=4, with_options=False)
    assert 0.0 < info["score"] == score_reward == score_info["score"] < 1.0
    assert (reward, info["won"], terminated) == (0.0, False, True)
    assert env.step("click[buy now]")[1] == 0.0  # paid once


def test_reward_mode_is_validated():
    with pytest.raises(ValueError, match=re.escape("reward must be one of ('score', 'success'), got 'binary'")):
        WebShopEnv(reward="binary")
    assert gym.make("WebShop-v0", split="test", reward="success").unwrapped.reward_mode == "success"


@pytest.mark.parametrize(
    "action",
    [
        "",
        "   ",
        "search[]",
        "search[   ]",
        "click[]",
        "Search[shoes]",
        "buy now",
        "click[buy now]",
        "click[b000000000]",
        "click[search]",
        "look[shoes]",
        "search[shoes",
        "click shoes]",
        None,
        42,
        b"search[shoes]",
    ],
)
def test_invalid_actions_change_nothing_but_count(env, action):
    obs, info = env.reset(options={"task_id": 1})
    after, reward, terminated, truncated, info = env.step(action)
    assert (after, reward, terminated, truncated) == (obs, 0.0, False, False)
    assert info["action_valid"] is False and info["step"] == 1 and info["state"] == "WebShop [SEP] Search"


def test_search_is_only_valid_on_the_search_page(env):
    obs, _, _, _, _ = _search_goal(env)
    after = env.step("search[shoes]")
    assert after[0] == obs and after[4]["action_valid"] is False


def test_episode_truncates_at_fifteen_steps(env):
    env.reset(options={"task_id": 0})
    for step in range(1, MAX_STEPS + 1):
        _, reward, terminated, truncated, info = env.step(env.noop_action)
        assert (reward, terminated, info["step"]) == (0.0, False, step)
        assert truncated is (step == MAX_STEPS)


def test_constructor_validates_its_arguments():
    with pytest.raises(ValueError, match="max_steps must be a positive integer"):
        WebShopEnv(max_steps=0)
    with pytest.raises(ValueError, match="unknown goal split"):
        WebShopEnv(split="validation")
    with pytest.raises(ValueError, match="render_mode"):
        WebShopEnv(render_mode="human")
    with pytest.raises(FileNotFoundError, match="items_shuffle_1000.json"):
        WebShopEnv(catalog="real", data_dir="/nonexistent/webshop-data")


def test_ansi_render_returns_the_observation():
    env = WebShopEnv(split="test", render_mode="ansi")
    obs, _ = env.reset(options={"task_id": 0})
    assert env.render() == obs


def test_parse_action():
    assert parse_action("  click[ Buy Now ] ") == ("click", "buy now")
    assert parse_action("search[red [large] shoes]") == ("search", "red [large] shoes")
    assert parse_action("click[]") is None and parse_action("hello") is None and parse_action(3) is None


_ACTION_TEXT = st.one_of(
    st.text(max_size=60),
    st.builds(
        lambda verb, arg: f"{verb}[{arg}]", st.sampled_from(["search", "click", "Click", "buy"]), st.text(max_size=40)
    ),
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    prefix=st.lists(st.sampled_from(["click[next >]", "click[< prev]", "click[description]"]), max_size=3),
    action=_ACTION_TEXT,
)
def test_arbitrary_text_never_raises(env, prefix, action):
    _, _, _, _, info = _search_goal(env)
    obs, _, _, _, _ = env.step(_first_product_click(info))
    for step in prefix:
        obs, _, _, _, _ = env.step(step)
    after, reward, _, _, info = env.step(action)
    assert isinstance(after, str) and isinstance(reward, float)
    if not info["action_valid"]:
        assert after == obs and reward == 0.0


def test_llm_wrappers_drive_the_env():
    llm_env = make_llm_env("WebShop-v0", split="test")
    prompt, info = llm_env.reset(options={"task_id": 0})
    assert info["task"] in prompt and "'search[<your query>]'" in prompt
    query = info["task"].split(" with ")[0]
    prompt, reward, _, _, info = llm_env.step(f"<think>search first</think><action>search[{query}]</action>")
    assert info["action_admissible"] and info["page"] == "results" and reward == 0.0
    _, reward, _, _, info = llm_env.step("<think>buy</think><action>click[Buy Now]</action>")
    assert not info["action_admissible"] and info["executed_action"] == "" and reward == 0.0
    assert info["invalid_penalty"] == 0.1  # reported beside the env's reward, not subtracted from it
    assert info["page"] == "results" and info["step"] == 2


def test_passes_the_gymnasium_env_checker():
    check_env(WebShopEnv(split="test"), skip_render_check=True)
