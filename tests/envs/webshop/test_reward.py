"""The WebShop purchase reward against hand-computed values."""

from __future__ import annotations

import dataclasses

import pytest

from envs.webshop.catalog import Product
from envs.webshop.goals import Goal
from envs.webshop.reward import (
    fuzzy_match,
    fuzzy_score,
    name_nouns,
    normalize_color,
    purchase_reward,
    type_match,
)

SHAMPOO_PATH = "Beauty & Personal Care › Hair Care › Shampoo & Conditioner › Shampoos"

GOAL = Goal(
    asin="B000000001",
    category="beauty",
    query="shampoo",
    name="Velora Sulfate Free Color Safe Shampoo",
    product_category=SHAMPOO_PATH,
    instruction_text="i need shampoo with sulfate free and color safe with scent: lavender, and size: 16 fl oz, "
    "and price lower than 30.00 dollars",
    attributes=("sulfate free", "color safe"),
    options=("lavender", "16 fl oz"),
    price_upper=30.0,
)
# Goal nouns (six): velora, sulfate, free, color, safe, shampoo. Denominator: 2 + 2 + 1 = 5.

EXACT = Product(
    asin="B000000001",
    title="Velora Sulfate Free Color Safe Shampoo",
    category="beauty",
    query="shampoo",
    product_category=SHAMPOO_PATH,
    description="A gentle everyday wash.",
    bullet_points=("Gentle on hair",),
    pricing=(24.99,),
    price_tag="$24.99",
    options={"scent": ("lavender", "coconut"), "size": ("8 fl oz", "16 fl oz")},
    attributes=("sulfate free", "color safe", "argan oil"),
    reviews=(),
    rating="N.A.",
)
ATTRIBUTE_MISS = dataclasses.replace(
    EXACT, title="Velora Sulfate Free Argan Oil Shampoo", attributes=("sulfate free", "argan oil")
)
SPEAKER = Product(
    asin="B000000009",
    title="Tavix Wireless Bluetooth Speaker",
    category="electronics",
    query="bluetooth speaker",
    product_category="Electronics › Portable Audio & Video › Portable Bluetooth Speakers",
    description="Loud and clear.",
    bullet_points=("Waterproof",),
    pricing=(20.0,),
    price_tag="$20.0",
    options={},
    attributes=("waterproof",),
    reviews=(),
    rating="N.A.",
)
# Shares one noun (velora) of six with the goal name, no query and no category level.
SAME_BRAND_BAG = dataclasses.replace(
    SPEAKER,
    title="Velora Travel Bag",
    category="fashion",
    query="travel bag",
    product_category="Clothing, Shoes & Jewelry › Luggage & Travel Gear › Travel Totes",
)
# Shares two category levels and one noun with the goal.
SAME_BRAND_CONDITIONER = dataclasses.replace(
    SPEAKER,
    title="Velora Conditioner",
    category="beauty",
    query="conditioner",
    product_category="Beauty & Personal Care › Hair Care › Conditioners",
)


@pytest.mark.parametrize(
    ("case", "product", "price", "options", "expected"),
    [
        ("exact purchase", EXACT, 24.99, ["lavender", "16 fl oz"], 5 / 5),
        ("exact product, price equal to the bound", EXACT, 30.0, ["lavender", "16 fl oz"], 5 / 5),
        ("near miss: one goal attribute missing", ATTRIBUTE_MISS, 24.99, ["lavender", "16 fl oz"], 4 / 5),
        ("near miss: one option wrong", EXACT, 24.99, ["lavender", "8 fl oz"], 4 / 5),
        ("options not chosen", EXACT, 24.99, [], 3 / 5),
        ("over price: one cent above the bound", EXACT, 30.01, ["lavender", "16 fl oz"], 4 / 5),
        ("wrong category, no shared noun: r_type 0", SPEAKER, 20.0, [], 0.0),
        ("other category, 1/6 nouns shared: r_type 0.5", SAME_BRAND_BAG, 20.0, [], 0.5 * 1 / 5),
        ("shared category path, 1/6 nouns: r_type 1", SAME_BRAND_CONDITIONER, 20.0, [], 1 / 5),
    ],
)
def test_reward_table(case, product, price, options, expected):
    assert purchase_reward(product, GOAL, price, options).total == pytest.approx(expected), case


def test_exact_purchase_is_exactly_one():
    reward = purchase_reward(EXACT, GOAL, 24.99, ["lavender", "16 fl oz"])
    assert reward.total == 1.0
    assert (reward.attribute_matches, reward.option_matches, reward.price_ok, reward.denominator) == (2, 2, True, 5)


def test_attribute_found_in_description_counts():
    described = dataclasses.replace(ATTRIBUTE_MISS, description="A Color Safe formula for daily use.")
    assert purchase_reward(described, GOAL, 24.99, ["lavender", "16 fl oz"]).total == 1.0


def test_colour_options_are_normalised_before_matching():
    goal = dataclasses.replace(GOAL, options=("navy blue",))
    # "navy blue" -> "blue" (blue precedes navy in the colour list), so a plain blue matches.
    assert purchase_reward(EXACT, goal, 24.99, ["blue"]).option_matches == 1
    assert purchase_reward(EXACT, goal, 24.99, ["black"]).option_matches == 0


def test_type_match_signals():
    match = type_match(SAME_BRAND_BAG, GOAL)
    assert (match.query_match, match.category_match) == (False, False)
    assert match.title_score == pytest.approx(1 / 6)
    assert match.r_type == 0.5
    assert type_match(EXACT, GOAL).r_type == 1.0


def test_r_type_is_a_tenth_below_ten_percent_of_nouns():
    long_name = "Velora Alpha Beta Gamma Delta Epsilon Zeta Theta Iota Kappa Lambda"
    goal = dataclasses.replace(GOAL, name=long_name)
    match = type_match(SAME_BRAND_BAG, goal)
    assert match.title_score == pytest.approx(1 / 11)
    assert match.r_type == 0.1


def test_goal_name_without_nouns_scores_a_fifth():
    goal = dataclasses.replace(GOAL, name="the 2 of 3")
    assert type_match(SPEAKER, goal).title_score == 0.2


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("black forest", "black"),
        ("violet lavender", "lavender"),
        ("steelivy fuchsia", "fuchsia"),
        ("123alabaster", "alabaster"),
        ("webshop", "webshop"),
        ("", ""),
    ],
)
def test_normalize_color_takes_first_listed_colour(value, expected):
    assert normalize_color(value) == expected


@pytest.mark.parametrize(
    ("a", "b", "score", "matches"),
    [
        ("large", "X-Large", 100, True),  # token subset: the original rule treats these as equal
        ("pack of 2", "pack of 3", 89, True),
        ("12 fl oz", "16 fl oz", 88, True),
        ("8 fl oz", "16 fl oz", 83, False),
        ("sulfate free", "paraben free", 58, False),
        ("", "anything", 0, False),
    ],
)
def test_fuzzy_score_reproduces_thefuzz(a, b, score, matches):
    assert fuzzy_score(a, b) == score
    assert fuzzy_match(a, b) is matches


def test_fuzzy_score_drops_latin1_characters_like_thefuzz():
    # thefuzz's force_ascii removes U+0080..U+00FF: "café" compares as "caf".
    assert fuzzy_score("café", "caf") == 100


def test_name_nouns_keeps_content_tokens():
    assert name_nouns("Men's Running Shoes for the Road, 2 Pack") == {"men", "running", "shoes", "road", "pack"}
