"""``WebShop-v0``: the WebShop shopping site as a Gymnasium text environment.

An episode: the agent reads an instruction, searches, browses result pages
(10 products each, at most 50 results), opens products, picks options, may read
a product's Description/Features/Reviews, and buys. Actions are the original's
``search[<query>]`` (only on the search page) and ``click[<text>]`` where
``<text>`` is a clickable of the current page, matched case-insensitively
(``click[Buy Now]`` = ``click[buy now]``). The reward is paid on ``click[buy now]``,
which ends the episode; after ``max_steps`` (15) steps the episode is truncated
with reward 0. ``reward="score"`` (the default, the original's) pays the
fractional purchase score of :mod:`envs.webshop.reward`; ``reward="success"``
pays 1.0 for a perfect purchase (score 1.0) and 0.0 otherwise, the binary
signal the ProxMO release trains on and PSC's success rate assumes. Either way
``info["score"]`` carries the score.

Anything else -- an empty or malformed string, a verb other than ``search`` or
``click``, an empty argument, a search away from the search page, a click on
something the page does not show, any step after the purchase -- is
invalid: as in the original it changes nothing and returns the same page, but it
still counts as a step, and ``info["action_valid"]`` is ``False``. (The original
also accepts searches from any page; here only ``admissible_actions`` are valid.)

``info`` always holds: ``won`` (score == 1), ``score`` (the purchase score so
far, 0 before buying, whatever ``reward`` is), ``step`` (steps taken), ``task_id``, ``task`` (the
instruction), ``task_type`` (the goal's product category), ``state`` (the page
text without the instruction), ``admissible_actions`` (``"search[<your query>]"``
where a search bar exists, then ``"click[<text>]"`` per clickable), ``action_valid``,
``page`` (the page name) and ``purchase`` (reward parts after buying, else ``None``).
"""

from __future__ import annotations

import re
from typing import Any

import gymnasium as gym
import numpy as np

from envs.spaces import TextSpace
from envs.task_selection import TaskSelectionMixin
from envs.webshop import pages
from envs.webshop.catalog import Product
from envs.webshop.goals import Goal
from envs.webshop.pages import ClickKind, Page
from envs.webshop.reward import purchase_reward
from envs.webshop.shop import Shop, ShopConfig, load_shop

MAX_STEPS = 15
#: What ``step`` pays on purchase: the fractional score, or 1/0 for a perfect purchase.
REWARD_MODES = ("score", "success")
SEARCH_TEMPLATE = "search[<your query>]"

_ACTION = re.compile(r"(search|click)\[(.*)\]", re.DOTALL)


def parse_action(action: object) -> tuple[str, str] | None:
    """Split an action into ``(verb, lower-cased argument)``; ``None`` if malformed."""
    if not isinstance(action, str):
        return None
    match = _ACTION.fullmatch(action.strip())
    if match is None:
        return None
    argument = match.group(2).strip().lower()
    return (match.group(1), argument) if argument else None


class WebShopEnv(TaskSelectionMixin, gym.Env[str, str]):
    """The WebShop site with one goal per episode.

    Args:
        split: ``"train"`` or ``"test"`` goals.
        catalog: ``"generated"`` (default, offline) or ``"real"``.
        data_dir: folder of the original JSON files (``catalog="real"``).
        num_products: generated: at least this many products (default 2000);
            real: the first ``num_products`` records.
        catalog_seed: seeds the generated catalogue, prices and price bounds.
        human_goals: real data: use the human-written instructions.
        small_data: real data: read the ``*_1000.json`` files.
        max_steps: steps before truncation.
        reward: ``"score"`` (the purchase score in [0, 1]) or ``"success"``
            (1.0 when the score is 1.0, else 0.0).
        render_mode: ``None`` or ``"ansi"`` (``render()`` returns the observation).

    Task ids are goal indices in the split (``task_ids``). ``reset`` plays
    ``options["task_id"]`` if given, else the next id queued with
    :meth:`queue_tasks`, else one drawn from the environment's generator.
    ``noop_action`` (``""``, an invalid action) and ``prompt_template``
    (``"webshop"``) serve :mod:`envs.llm_wrappers`.
    """

    metadata = {"render_modes": ["ansi"]}
    noop_action = ""
    prompt_template = "webshop"

    def __init__(
        self,
        split: str = "train",
        catalog: str = "generated",
        data_dir: str | None = None,
        num_products: int | None = None,
        catalog_seed: int = 0,
        human_goals: bool = False,
        small_data: bool = True,
        max_steps: int = MAX_STEPS,
        reward: str = "score",
        render_mode: str | None = None,
    ):
        if isinstance(max_steps, bool) or not isinstance(max_steps, int) or max_steps < 1:
            raise ValueError(f"max_steps must be a positive integer, got {max_steps!r}")
        if reward not in REWARD_MODES:
            raise ValueError(f"reward must be one of {REWARD_MODES}, got {reward!r}")
        if render_mode is not None and render_mode not in self.metadata["render_modes"]:
            raise ValueError(f"unsupported render_mode {render_mode!r}; expected None or 'ansi'")
        config = ShopConfig(
            source=catalog,
            data_dir=None if data_dir is None else str(data_dir),
            num_products=num_products,
            seed=catalog_seed,
            human_goals=human_goals,
            small=small_data,
        )
        self.shop: Shop = load_shop(config)
        self.split = split
        self.goals: tuple[Goal, ...] = self.shop.goals.get(split)
        if not self.goals:
            raise ValueError(f"the {split!r} split of this catalogue has no goals")
        self.max_steps = max_steps
        self.reward_mode = reward
        self.render_mode = render_mode
        self.observation_space = TextSpace()
        self.action_space = TextSpace()

        self._init_task_queue()
        self._task_id = 0
        self._goal = self.goals[0]
        self._page: Page = pages.search_page()
        self._steps = 0
        self._score = 0.0
        self._purchase: dict[str, Any] | None = None
        self._results: list[str] = []
        self._result_page = 1
        self._asin: str | None = None
        self._options: dict[str, str] = {}

    @property
    def num_tasks(self) -> int:
        """Number of goals in this environment's split."""
        return len(self.goals)

    @property
    def task_ids(self) -> list[int]:
        """Ids of the split's goals."""
        return list(range(self.num_tasks))

    @property
    def goal(self) -> Goal:
        """The current episode's goal."""
        return self._goal

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[str, dict[str, Any]]:
        """Start an episode on the search page.

        Raises:
            ValueError: for unknown options or a ``task_id`` outside ``[0, num_tasks)``.
        """
        super().reset(seed=seed)
        self._task_id = self._select_task(options)
        self._goal = self.goals[self._task_id]
        self._steps = 0
        self._score = 0.0
        self._purchase = None
        self._go_to_search()
        return self._observation(), self._info(action_valid=True)

    def step(self, action: str) -> tuple[str, float, bool, bool, dict[str, Any]]:
        """Apply one ``search[...]``/``click[...]`` action; invalid ones change nothing."""
        self._steps += 1
        purchased_before = self._purchase is not None
        valid = not purchased_before and self._apply(action)
        terminated = self._purchase is not None
        reward = 0.0
        if terminated and not purchased_before:
            reward = self._score if self.reward_mode == "score" else float(self._won)
        truncated = not terminated and self._steps >= self.max_steps
        return self._observation(), reward, terminated, truncated, self._info(action_valid=valid)

    def render(self) -> str | None:
        """The current observation in ``"ansi"`` mode, else nothing."""
        return self._observation() if self.render_mode == "ansi" else None

    def _checked_task_id(self, task_id: object) -> int:
        if isinstance(task_id, bool) or not isinstance(task_id, (int, np.integer)) or not 0 <= task_id < self.num_tasks:
            raise ValueError(
                f"task_id must be an integer in [0, {self.num_tasks}) for the {self.split!r} split, got {task_id!r}"
            )
        return int(task_id)

    def _apply(self, action: object) -> bool:
        parsed = parse_action(action)
        if parsed is None:
            return False
        verb, argument = parsed
        if verb == "search":
            if not self._page.has_search_bar:
                return False
            self._results = self.shop.search.search(argument)
            self._show_results(page=1)
            return True
        clickable = self._page.clickables.get(argument)
        if clickable is None:
            return False
        if clickable.kind is ClickKind.BACK_TO_SEARCH:
            self._go_to_search()
        elif clickable.kind is ClickKind.NEXT_PAGE:
            self._show_results(self._result_page + 1)
        elif clickable.kind is ClickKind.PREV_PAGE:
            self._go_back()
        elif clickable.kind is ClickKind.PRODUCT:
            self._asin = clickable.value
            self._options = {}
            self._page = pages.item_page(self.shop.catalog.get(clickable.value))
        elif clickable.kind is ClickKind.OPTION:
            self._options[clickable.option_name] = clickable.value
        elif clickable.kind is ClickKind.SUB_PAGE:
            self._page = pages.sub_page(self._current_product(), clickable.value)
        else:
            self._buy()
        return True

    def _go_to_search(self) -> None:
        self._page = pages.search_page()
        self._results = []
        self._result_page = 1
        self._asin = None
        self._options = {}

    def _show_results(self, page: int) -> None:
        self._result_page = page
        self._asin = None
        self._options = {}
        start = (page - 1) * pages.RESULTS_PER_PAGE
        shown = [self.shop.catalog.get(asin) for asin in self._results[start : start + pages.RESULTS_PER_PAGE]]
        self._page = pages.results_page(shown, page, len(self._results))

    def _go_back(self) -> None:
        if self._page.name == "results":
            self._show_results(self._result_page - 1)
        elif self._page.name == "item":
            self._show_results(self._result_page)
        else:
            self._page = pages.item_page(self._current_product())

    def _current_product(self) -> Product:
        if self._asin is None:
            raise RuntimeError("no product is open")
        return self.shop.catalog.get(self._asin)

    def _buy(self) -> None:
        product = self._current_product()
        reward = purchase_reward(
            product, self._goal, self.shop.catalog.prices[product.asin], list(self._options.values())
        )
        self._score = reward.total
        self._purchase = {"asin": product.asin, "options": dict(self._options), **reward.as_dict()}
        self._page = pages.done_page(reward.total)

    @property
    def _won(self) -> bool:
        return self._score == 1.0

    def _observation(self) -> str:
        return self._page.observation(self._goal.instruction_text)

    def _admissible_actions(self) -> list[str]:
        actions = [SEARCH_TEMPLATE] if self._page.has_search_bar else []
        actions.extend(f"click[{text}]" for text in self._page.clickables)
        return actions

    def _info(self, action_valid: bool) -> dict[str, Any]:
        return {
            "won": self._won,
            "score": self._score,
            "step": self._steps,
            "task_id": self._task_id,
            "task": self._goal.instruction_text,
            "task_type": self._goal.category,
            "state": self._page.state,
            "admissible_actions": self._admissible_actions(),
            "action_valid": action_valid,
            "page": self._page.name,
            "purchase": self._purchase,
        }
