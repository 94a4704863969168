"""The source configuration: mapping user headers onto the canonical contract."""

from __future__ import annotations

import pytest
import yaml

from customer360.errors import UserFacingError
from customer360.settings import PROJECT_ROOT, Settings
from customer360.sources import CANONICAL_ORDER, load_source_specs


def write_config(tmp_path, text: str) -> Settings:
    path = tmp_path / "sources.yaml"
    path.write_text(text)
    return Settings(sources_config=path)


def test_default_configuration_maps_every_canonical_field_to_itself():
    specs = load_source_specs(Settings())
    for name, spec in specs.items():
        header = list(CANONICAL_ORDER[name])
        assert spec.column_positions(header, f"{name}.csv") == list(range(len(header)))


def test_renamed_and_reordered_columns_are_found(tmp_path):
    settings = write_config(
        tmp_path,
        "sources:\n  products:\n    file: items.csv\n    record_source: pim.items\n"
        "    columns: {product_id: SKU, unit_price: Price}\n",
    )
    spec = load_source_specs(settings)["products"]
    header = ["Price", "product_name", "SKU", "category", "brand", "cost", "extra"]
    positions = spec.column_positions(header, "items.csv")
    assert positions == [2, 1, 3, 4, 0, 5]
    assert spec.file == "items.csv"
    assert spec.record_source == "pim.items"


def test_missing_required_column_is_refused_by_name():
    spec = load_source_specs(Settings())["customers"]
    header = ["customer_id", "first_name", "last_name", "phone"]
    with pytest.raises(UserFacingError, match="missing the required column 'email'"):
        spec.column_positions(header, "customers.csv")


def test_missing_optional_column_is_accepted():
    spec = load_source_specs(Settings())["customers"]
    header = ["customer_id", "first_name", "last_name", "email"]
    positions = spec.column_positions(header, "customers.csv")
    assert positions[:4] == [0, 1, 2, 3]
    assert positions[4:] == [None] * 6


def test_mapping_an_unknown_field_is_refused(tmp_path):
    settings = write_config(tmp_path, "sources:\n  customers:\n    columns: {shoe_size: size}\n")
    with pytest.raises(UserFacingError, match="shoe_size"):
        load_source_specs(settings)


def test_invalid_yaml_is_refused(tmp_path):
    settings = write_config(tmp_path, "sources: [unclosed\n")
    with pytest.raises(UserFacingError, match="not valid YAML"):
        load_source_specs(settings)


def test_a_configuration_of_ones_own_needs_only_what_differs_from_the_shipped_one(tmp_path):
    settings = write_config(tmp_path, "sources:\n  customers:\n    file: clients.csv\n")
    shipped_text = (PROJECT_ROOT / "data" / "sources.yaml").read_text(encoding="utf-8")
    shipped = yaml.safe_load(shipped_text)["sources"]

    specs = load_source_specs(settings)

    assert specs["customers"].file == "clients.csv"
    assert specs["customers"].record_source == shipped["customers"]["record_source"]
    for name in ("products", "transactions"):
        assert (specs[name].file, specs[name].record_source, specs[name].formats) == (
            shipped[name]["file"],
            shipped[name]["record_source"],
            shipped[name].get("formats", {}),
        )


@pytest.mark.parametrize(
    ("config_text", "named"),
    [
        ("- customers\n- products\n", "a mapping"),
        ("sources: [1, 2]\n", "sources"),
        ("sources:\n  customers: [a, b]\n", "sources.customers"),
        ("sources:\n  clients:\n    file: clients.csv\n", "clients"),
        ("sources:\n  customers:\n    fille: clients.csv\n", "fille"),
        ("sources:\n  customers:\n    file:\n", "sources.customers.file"),
        ("sources:\n  customers:\n    file: 7\n", "sources.customers.file"),
        ("sources:\n  products:\n    record_source: ''\n", "sources.products.record_source"),
        ("sources:\n  customers:\n    columns: [a, b]\n", "sources.customers.columns"),
        ("sources:\n  customers:\n    columns: {email: 3}\n", "sources.customers.columns.email"),
        ("sources:\n  customers:\n    formats: iso\n", "sources.customers.formats"),
        (
            "sources:\n  customers:\n    formats:\n      signup_date: 5\n",
            "sources.customers.formats.signup_date",
        ),
        (
            "sources:\n  customers:\n    formats:\n      birthday: DD/MM/YYYY\n",
            "birthday",
        ),
        ("sources:\n  transactions:\n    timezone: Mars/Olympus\n", "Mars/Olympus"),
        ("sources:\n  transactions:\n    timezone: 2\n", "sources.transactions.timezone"),
        ("sources:\n  transactions:\n    timezone: ../../etc/passwd\n", "timezone"),
    ],
)
def test_a_malformed_configuration_is_refused_naming_the_file_and_key(tmp_path, config_text, named):
    settings = write_config(tmp_path, config_text)
    with pytest.raises(UserFacingError) as refused:
        load_source_specs(settings)
    assert str(settings.sources_config) in str(refused.value)
    assert named in str(refused.value)


def test_a_time_zone_by_its_iana_name_is_accepted(tmp_path):
    settings = write_config(tmp_path, "sources:\n  transactions:\n    timezone: Europe/Berlin\n")
    assert load_source_specs(settings)["transactions"].timezone == "Europe/Berlin"
