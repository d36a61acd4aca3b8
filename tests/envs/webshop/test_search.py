"""BM25 product search."""

from __future__ import annotations

import pytest

from envs.webshop.search import SEARCH_RETURN_N, SearchEngine, document_text, plural_stem, tokenize
from envs.webshop.shop import ShopConfig, load_shop


@pytest.mark.parametrize(
    ("word", "stem"),
    [
        ("shoes", "shoe"),
        ("batteries", "battery"),
        ("series", "sery"),
        ("glasses", "glasse"),
        ("dress", "dress"),
        ("cactus", "cactus"),
        ("toes", "toe"),
        ("shampoo", "shampoo"),
    ],
)
def test_plural_stem(word, stem):
    assert plural_stem(word) == stem


def test_tokenize_lowercases_and_drops_lucene_stop_words():
    assert tokenize("The Running SHOES for men, size 10!") == ["running", "shoe", "men", "size", "10"]


@pytest.fixture(scope="module")
def shop():
    return load_shop(ShopConfig())


def test_document_text_holds_title_description_first_bullet_and_options(shop):
    product = next(product for product in shop.catalog.products if len(product.options) == 2)
    text = document_text(product)
    assert product.title.lower() in text and product.description.lower() in text
    assert product.bullet_points[0].lower() in text and product.bullet_points[1].lower() not in text
    name, values = next(iter(product.options.items()))
    assert f"{name}: {', '.join(values)}, and " in text


def test_a_products_own_title_ranks_it_first(shop):
    for product in shop.catalog.products[:200]:
        top = shop.search.search(product.title)[0]
        # itself, or a product named with the same words (a family member, or the same words reordered)
        assert sorted(tokenize(shop.catalog.get(top).title)) == sorted(tokenize(product.title))


def test_results_are_capped_best_first_and_only_matching(shop):
    results = shop.search.search("shampoo lavender")
    assert len(results) == SEARCH_RETURN_N == len(set(results))
    assert all(
        "shampoo" in document_text(shop.catalog.get(asin)) or "lavender" in document_text(shop.catalog.get(asin))
        for asin in results
    )
    assert shop.search.search("") == [] and shop.search.search("the of and") == []
    assert shop.search.search("zzzqqq xylophone") == []
    assert len(shop.search.search("velora", limit=3)) <= 3


def test_goal_instructions_find_their_target(shop):
    for goal in shop.goals.test[:100]:
        assert goal.asin in shop.search.search(goal.instruction_text)[:10]


def test_empty_catalogue_is_rejected():
    with pytest.raises(ValueError, match="empty catalogue"):
        SearchEngine([])
