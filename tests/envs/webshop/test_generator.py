"""The generated catalogue: size, shape, determinism and real near misses."""

from __future__ import annotations

import random
from collections import Counter, defaultdict
from itertools import combinations

import pytest

from envs.webshop.catalog import parse_products, sample_prices
from envs.webshop.generator import FAMILY_SIZE, generate_catalog
from envs.webshop.goals import synthetic_goals
from envs.webshop.policies import best_options
from envs.webshop.reward import fuzzy_match, normalize_color, purchase_reward
from envs.webshop.vocabulary import CATEGORIES, PRODUCT_TYPES

ORIGINAL_ITEM_KEYS = {
    "asin",
    "name",
    "full_description",
    "small_description",
    "pricing",
    "customization_options",
    "category",
    "query",
    "product_category",
    "images",
}


@pytest.fixture(scope="module")
def generated():
    return generate_catalog()


def test_default_catalogue_has_2000_products_over_five_categories(generated):
    products = parse_products(generated.raw)
    assert len(products) == len(generated.raw.items) >= 2000
    assert len({product.asin for product in products}) == len(products)
    categories = Counter(product.category for product in products)
    assert set(categories) == {"beauty", "electronics", "fashion", "food", "furniture"}
    assert min(categories.values()) >= 300
    assert len({product.query for product in products}) == len(PRODUCT_TYPES)


def test_records_have_the_original_json_shape(generated):
    for item in generated.raw.items:
        assert set(item) == ORIGINAL_ITEM_KEYS
        assert len(item["asin"]) == 10 and item["pricing"].startswith("$")
        assert all(
            set(entry) == {"value", "image"} for values in item["customization_options"].values() for entry in values
        )
    anchors = {family.anchor for family in generated.families}
    for asin, record in generated.raw.attributes.items():
        expected = {"attributes", "instruction", "instruction_attributes"} if asin in anchors else {"attributes"}
        assert set(record) == expected


def test_generation_is_a_function_of_size_and_seed():
    first, again, other = generate_catalog(600, seed=5), generate_catalog(600, seed=5), generate_catalog(600, seed=6)
    assert first == again
    assert first.raw.items != other.raw.items


def test_small_requests_still_get_a_test_split():
    generated = generate_catalog(num_products=10)
    assert len(generated.raw.items) == len(PRODUCT_TYPES) * FAMILY_SIZE * 4
    assert len(generated.test_asins) == len(PRODUCT_TYPES)


@pytest.mark.parametrize("bad", [0, -5, 2.5, True, "2000"])
def test_bad_sizes_are_rejected(bad):
    with pytest.raises(ValueError, match="num_products must be a positive integer"):
        generate_catalog(num_products=bad)


@pytest.mark.parametrize("product_type", PRODUCT_TYPES, ids=lambda product_type: product_type.query)
def test_vocabulary_pools_hold_no_fuzzy_twins(product_type):
    attributes = product_type.attributes + CATEGORIES[product_type.category].attributes
    for a, b in combinations(attributes, 2):
        assert not fuzzy_match(a, b) and a not in b and b not in a, (a, b)
    values = [normalize_color(value) for _, pool in product_type.options for value in pool]
    for a, b in combinations(values, 2):
        assert not fuzzy_match(a, b), (a, b)


def test_every_family_is_one_perfect_anchor_and_three_near_misses(generated):
    """Buying the anchor with the goal's options scores 1; the attribute miss and the
    over-price twin never do; the option miss fails exactly the goals asking for the
    value it lacks."""
    products = parse_products(generated.raw)
    by_asin = {product.asin: product for product in products}
    prices = sample_prices(products, random.Random(0))
    goals_by_asin = defaultdict(list)
    for goal in synthetic_goals(products, generated.raw.attributes, prices, random.Random(0)):
        goals_by_asin[goal.asin].append(goal)

    def score(asin, goal):
        product = by_asin[asin]
        return purchase_reward(product, goal, prices[asin], list(best_options(product, goal).values())).total

    option_misses = 0
    for family in generated.families:
        goals = goals_by_asin[family.anchor]
        assert goals
        lacking = {value for values in by_asin[family.anchor].options.values() for value in values} - {
            value for values in by_asin[family.option_miss].options.values() for value in values
        }
        assert len(lacking) == 1
        for goal in goals:
            assert score(family.anchor, goal) == 1.0
            assert score(family.attribute_miss, goal) < 1.0
            assert score(family.over_price, goal) < 1.0
            assert prices[family.over_price] > goal.price_upper
            wants_lacking = bool(lacking & set(goal.options))
            assert (score(family.option_miss, goal) < 1.0) is wants_lacking
            option_misses += wants_lacking
    assert option_misses > 0
