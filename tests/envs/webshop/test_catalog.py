"""Parsing and reading WebShop data files (original format)."""

from __future__ import annotations

import json
import random

import pytest

from envs.webshop.catalog import (
    Catalog,
    RawData,
    parse_products,
    read_data_dir,
    sample_prices,
    write_data_dir,
)
from envs.webshop.generator import generate_catalog


def _item(asin: str, **overrides) -> dict:
    item = {
        "asin": asin,
        "name": f"Product {asin}",
        "full_description": "A description.",
        "small_description": ["First bullet", "Second bullet"],
        "pricing": "$12.50",
        "customization_options": {},
        "category": "beauty",
        "query": " Shampoo ",
        "product_category": "Beauty & Personal Care › Hair Care",
        "images": ["https://example.invalid/a.jpg"],
    }
    item.update(overrides)
    return item


def test_parser_applies_the_original_loader_rules():
    raw = RawData(
        items=[
            _item(
                "B000000001",
                pricing="$10.99 - $15.99",
                customization_options={"Color": [{"value": " Navy/Blue ", "image": None}], "Size": None},
            ),
            _item("nan"),
            _item("B0000000001LONG"),
            _item("B000000001", name="duplicate"),
            _item("B000000002", pricing="", small_description="only bullet"),
        ],
        attributes={"B000000001": {"attributes": ["sulfate free"]}},
        reviews=[
            {"asin": "B000000001", "average_rating": 4.5, "reviews": [{"title": "Nice", "stars": 5, "review": "Good."}]}
        ],
    )
    first, second = parse_products(raw)
    assert first.asin == "B000000001" and second.asin == "B000000002"
    assert first.pricing == (10.99, 15.99) and first.price_tag == "$10.99 to $15.99"
    assert first.options == {"color": ("navy | blue",)}
    assert first.query == "shampoo"
    assert first.attributes == ("sulfate free",)
    assert first.rating == "4.5" and first.reviews[0].score == 5 and first.reviews[0].body == "Good."
    assert second.pricing == () and second.price_tag == "$100.0"
    assert second.bullet_points == ("only bullet",)
    assert second.attributes == ("DUMMY_ATTR",)
    assert second.rating == "N.A."


def test_parser_truncates_to_num_products_before_filtering():
    raw = RawData(items=[_item("nan"), _item("B000000002"), _item("B000000003")], attributes={}, reviews=[])
    assert [product.asin for product in parse_products(raw, num_products=2)] == ["B000000002"]


def test_parser_names_a_missing_field():
    broken = _item("B000000001")
    del broken["product_category"]
    with pytest.raises(ValueError, match="record 0 lacks product_category"):
        parse_products(RawData(items=[broken], attributes={}, reviews=[]))


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("pricing", "$abc", "unreadable pricing"),
        ("pricing", "12.00", "no '\\$' amount"),
        ("customization_options", ["red"], "must be an object"),
        ("customization_options", {"color": [{"image": None}]}, "option 'color' entries need a 'value'"),
    ],
)
def test_parser_rejects_malformed_fields(field, value, message):
    with pytest.raises(ValueError, match=message):
        parse_products(RawData(items=[_item("B000000001", **{field: value})], attributes={}, reviews=[]))


def test_prices_follow_the_original_rule_and_seed():
    raw = RawData(
        items=[_item("B000000001", pricing="$10 - $20"), _item("B000000002", pricing=""), _item("B000000003")],
        attributes={},
        reviews=[],
    )
    products = parse_products(raw)
    prices = sample_prices(products, random.Random(7))
    assert 10.0 <= prices["B000000001"] <= 20.0
    assert prices["B000000002"] == 100.0 and prices["B000000003"] == 12.5
    assert sample_prices(products, random.Random(7)) == prices


def test_catalog_index_and_unknown_ids():
    products = parse_products(RawData(items=[_item("B000000001")], attributes={}, reviews=[]))
    catalog = Catalog(products, {"B000000001": 12.5})
    assert "B000000001" in catalog and catalog.get("B000000001").title == "Product B000000001"
    with pytest.raises(KeyError, match="B999999999"):
        catalog.get("B999999999")
    with pytest.raises(ValueError, match="no price"):
        Catalog(products, {})


def test_missing_data_directory_names_the_expected_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist.*items_shuffle_1000.json, items_ins_v2_1000.json"):
        read_data_dir(tmp_path / "absent")
    (tmp_path / "items_shuffle.json").write_text("[]")
    with pytest.raises(FileNotFoundError, match="lacks items_ins_v2.json, items_human_ins.json"):
        read_data_dir(tmp_path, small=False, human_goals=True)


def test_invalid_json_is_reported_with_its_path(tmp_path):
    (tmp_path / "items_shuffle_1000.json").write_text("[{")
    (tmp_path / "items_ins_v2_1000.json").write_text("{}")
    with pytest.raises(ValueError, match="items_shuffle_1000.json is not valid JSON"):
        read_data_dir(tmp_path)
    (tmp_path / "items_shuffle_1000.json").write_text("{}")
    with pytest.raises(ValueError, match="must hold a JSON list"):
        read_data_dir(tmp_path)


def test_generated_data_round_trips_through_the_original_file_layout(tmp_path):
    raw = generate_catalog(num_products=500, seed=3).raw
    written = write_data_dir(raw, tmp_path)
    assert sorted(path.name for path in written) == ["items_ins_v2.json", "items_shuffle.json", "reviews.json"]
    assert json.loads((tmp_path / "items_shuffle.json").read_text())[0].keys() == raw.items[0].keys()
    reread = read_data_dir(tmp_path, small=False)
    assert parse_products(reread) == parse_products(raw)
