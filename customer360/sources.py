"""The input contract: the three CSV sources, their canonical fields, and the YAML file that
maps a user's files (headers, record source names, date formats) onto them."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import yaml

from customer360.errors import UserFacingError
from customer360.settings import PROJECT_ROOT, Settings, get_settings

DEFAULT_SOURCES_CONFIG = PROJECT_ROOT / "data" / "sources.yaml"

SOURCE_NAMES = ("customers", "products", "transactions")


@dataclass(frozen=True)
class CanonicalField:
    name: str
    required: bool


def _fields(spec: str) -> tuple[CanonicalField, ...]:
    """Fields in staging column order; a trailing '?' marks an optional field."""
    return tuple(
        CanonicalField(name.rstrip("?"), required=not name.endswith("?")) for name in spec.split()
    )


# The canonical fields of each source; docs/INPUT_CONTRACT.md gives their types and meaning.
CANONICAL_FIELDS: dict[str, tuple[CanonicalField, ...]] = {
    "customers": _fields(
        "customer_id first_name last_name email phone? city? state? country? signup_date? "
        "customer_segment?"
    ),
    "products": _fields("product_id product_name category brand? unit_price cost"),
    "transactions": _fields(
        "transaction_id customer_id product_id quantity unit_price discount? total_amount "
        "transaction_ts payment_method? order_status"
    ),
}

CANONICAL_ORDER: dict[str, tuple[str, ...]] = {
    source: tuple(f.name for f in fields) for source, fields in CANONICAL_FIELDS.items()
}


@dataclass(frozen=True)
class SourceSpec:
    """How one source file maps onto its canonical fields."""

    name: str
    file: str
    record_source: str
    columns: dict[str, str]  # canonical field -> header in the user's file
    formats: dict[str, str] = field(default_factory=dict)
    timezone: str = "UTC"

    def path_in(self, data_dir: Path) -> Path:
        return Path(data_dir) / self.file

    def column_positions(self, header: list[str], file_label: str) -> list[int | None]:
        """Position in the file of each canonical field (None for an absent optional field).

        Refuses a header that lacks a required column, naming the column.
        """
        positions_by_header = {name.strip(): index for index, name in enumerate(header)}
        required = {f.name for f in CANONICAL_FIELDS[self.name] if f.required}
        positions: list[int | None] = []
        for canonical in CANONICAL_ORDER[self.name]:
            header_name = self.columns.get(canonical, canonical)
            position = positions_by_header.get(header_name)
            if position is None and canonical in required:
                raise UserFacingError(
                    f"{file_label} is missing the required column '{header_name}'"
                    + (f" (mapped to {canonical})" if header_name != canonical else "")
                )
            positions.append(position)
        return positions


def load_source_specs(settings: Settings | None = None) -> dict[str, SourceSpec]:
    """The source specifications from the configured YAML file, over the shipped defaults
    (data/sources.yaml): a configuration of one's own needs only what differs from them."""
    settings = settings or get_settings()
    path = Path(settings.sources_config or DEFAULT_SOURCES_CONFIG)
    configured = _configured_sources(path)
    defaults = {}
    if path != DEFAULT_SOURCES_CONFIG and DEFAULT_SOURCES_CONFIG.exists():
        defaults = _configured_sources(DEFAULT_SOURCES_CONFIG)
    specs: dict[str, SourceSpec] = {}
    for name in SOURCE_NAMES:
        default, entry = defaults.get(name) or {}, configured.get(name) or {}
        unknown = set(entry.get("columns") or {}) - set(CANONICAL_ORDER[name])
        if unknown:
            raise UserFacingError(
                f"source configuration {path}: {name} maps unknown field(s) {sorted(unknown)}"
            )
        entry = {
            **default,
            **entry,
            "columns": {**(default.get("columns") or {}), **(entry.get("columns") or {})},
            "formats": {**(default.get("formats") or {}), **(entry.get("formats") or {})},
        }
        specs[name] = SourceSpec(
            name=name,
            file=entry.get("file", f"{name}.csv"),
            record_source=entry.get("record_source", f"csv.{name}"),
            columns=entry["columns"],
            formats=entry["formats"],
            timezone=entry.get("timezone", "UTC"),
        )
    return specs


def _configured_sources(path: Path) -> dict:
    """The ``sources`` section of a configuration file."""
    if not path.exists():
        raise UserFacingError(f"source configuration {path} does not exist")
    try:
        document = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as exc:
        raise UserFacingError(f"source configuration {path} is not valid YAML: {exc}") from exc
    return document.get("sources") or {}
