"""Goal construction, price bounds and train/test splits."""

from __future__ import annotations

import dataclasses
import random

import pytest

from envs.webshop.catalog import RawData, parse_products, write_data_dir
from envs.webshop.generator import generate_catalog
from envs.webshop.goals import (
    NO_PRICE_LIMIT,
    human_goals,
    price_bound,
    release_split,
    split_by_product,
    synthetic_goals,
)
from envs.webshop.shop import ShopConfig, load_shop


def _products():
    items = [
        {
            "asin": "B000000001",
            "name": "Velora Sulfate Free Shampoo",
            "full_description": "",
            "small_description": [],
            "pricing": "$23.99",
            "category": "beauty",
            "query": "shampoo",
            "product_category": "Beauty & Personal Care › Hair Care",
            "customization_options": {
                "size": [{"value": "8 fl oz"}, {"value": "16 fl oz"}],
                "color": [{"value": "red"}, {"value": "blue"}, {"value": "green"}],
            },
        },
        {
            "asin": "B000000002",
            "name": "Plain Soap",
            "full_description": "",
            "small_description": [],
            "pricing": "$995.00",
            "category": "beauty",
            "query": "soap",
            "product_category": "Beauty",
            "customization_options": {},
        },
    ]
    return parse_products(RawData(items=items, attributes={}, reviews=[]))


def test_price_bound_is_the_larger_of_two_of_the_next_four_multiples_of_ten():
    bounds = {price_bound(23.99, random.Random(seed))[0] for seed in range(200)}
    assert bounds == {40.0, 50.0, 60.0}
    upper, text = price_bound(23.99, random.Random(1))
    assert text == f", and price lower than {upper:.2f} dollars"
    assert price_bound(985.0, random.Random(0)) == (NO_PRICE_LIMIT, "")


def test_synthetic_goals_enumerate_option_combinations_in_the_original_wording():
    products = _products()
    attributes = {
        "B000000001": {
            "attributes": ["sulfate free"],
            "instruction": "i need sulfate free shampoo",
            "instruction_attributes": ["sulfate free"],
        },
        "B000000002": {"attributes": ["mild"], "instruction": "i want soap", "instruction_attributes": []},
    }
    goals = synthetic_goals(products, attributes, {"B000000001": 23.99, "B000000002": 995.0}, random.Random(0))
    assert len(goals) == 6  # 3 colours x 2 sizes; the soap's instruction has no attributes
    first = goals[0]
    assert first.instruction_text == (
        f"i need sulfate free shampoo with color: red, and size: 8 fl oz, and price lower than "
        f"{first.price_upper:.2f} dollars"
    )
    assert first.options == ("red", "8 fl oz") and first.attributes == ("sulfate free",)
    assert {goal.price_upper for goal in goals} == {first.price_upper}  # one bound per product
    assert (first.query, first.name, first.category) == ("shampoo", "Velora Sulfate Free Shampoo", "beauty")


def test_human_goals_strip_trailing_dots_and_skip_attributeless_instructions():
    products = _products()
    human = {
        "B000000001": [
            {"instruction": "i want a red shampoo.", "instruction_attributes": ["red"], "instruction_options": ["red"]},
            {"instruction": "anything", "instruction_attributes": [], "instruction_options": []},
        ]
    }
    (goal,) = human_goals(products, human, {"B000000001": 23.99}, random.Random(0))
    assert goal.instruction_text.startswith("i want a red shampoo, and price lower than ")
    assert goal.options == ("red",)
    broken = {"B000000001": [{"instruction_attributes": ["red"]}]}
    with pytest.raises(ValueError, match="B000000001 has no 'instruction' text"):
        human_goals(products, broken, {"B000000001": 23.99}, random.Random(0))


def test_release_split_tests_on_the_first_500_after_the_seeded_shuffle():
    goal = synthetic_goals(
        _products(),
        {"B000000001": {"instruction": "x", "instruction_attributes": ["a"]}},
        {"B000000001": 23.99},
        random.Random(0),
    )[0]
    goals = [dataclasses.replace(goal, instruction_text=str(index)) for index in range(1200)]
    splits = release_split(goals)
    shuffled = list(goals)
    saved = random.getstate()
    random.seed(233)  # the release's call sequence
    random.shuffle(shuffled)
    random.setstate(saved)
    assert splits.test == tuple(shuffled[:500]) and splits.train == tuple(shuffled[500:])
    with pytest.raises(ValueError, match="unknown goal split 'valid'"):
        splits.get("valid")


def test_generated_splits_hold_out_whole_products():
    shop = load_shop(ShopConfig())
    train_asins = {goal.asin for goal in shop.goals.train}
    test_asins = {goal.asin for goal in shop.goals.test}
    assert not train_asins & test_asins
    assert len(shop.goals.test) >= 500 and len(shop.goals.train) > len(shop.goals.test)
    assert {goal.category for goal in shop.goals.test} == {"beauty", "electronics", "fashion", "food", "furniture"}
    assert len({goal.instruction_text for goal in shop.goals.test}) == len(shop.goals.test)


def test_split_by_product_is_seeded():
    generated = generate_catalog(500)
    products = parse_products(generated.raw)
    prices = {product.asin: product.pricing[0] for product in products}
    goals = synthetic_goals(products, generated.raw.attributes, prices, random.Random(0))
    assert split_by_product(goals, generated.test_asins, 1) == split_by_product(goals, generated.test_asins, 1)
    assert split_by_product(goals, generated.test_asins, 1) != split_by_product(goals, generated.test_asins, 2)


def test_real_data_directory_gets_the_release_split(tmp_path):
    write_data_dir(generate_catalog(1000, seed=2).raw, tmp_path)
    shop = load_shop(ShopConfig(source="real", data_dir=str(tmp_path), small=False, seed=2))
    assert len(shop.goals.test) == 500
    assert len(shop.catalog) == len(parse_products(generate_catalog(1000, seed=2).raw))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"source": "web"}, "unknown catalogue source"),
        ({"source": "real"}, "needs data_dir"),
        ({"human_goals": True}, "human_goals needs source='real'"),
        ({"num_products": 0}, "positive integer"),
    ],
)
def test_shop_config_rejects_bad_settings(kwargs, message):
    with pytest.raises(ValueError, match=message):
        ShopConfig(**kwargs)
