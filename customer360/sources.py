"""The input contract: the three CSV sources, their canonical fields, and the YAML file that
maps a user's files (headers, record source names, date formats) onto them."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import yaml

from customer360.errors import UserFacingError
from customer360.settings import PROJECT_ROOT, Settings, get_settings

DEFAULT_SOURCES_CONFIG = PROJECT_ROOT / "data" / "sources.yaml"

SOURCE_NAMES = ("customers", "products", "transactions")

# The longest business key (customer, product or order id) the platform takes, in characters
# once trimmed: the warehouse indexes keys, and a B-tree entry cannot exceed about 2.7 kB.
MAX_KEY_LENGTH = 100
# The longest text value (a name, an e-mail, a city, a category...): the business views index
# several of them, and a value too long for its index entry would fail the whole refresh.
MAX_TEXT_LENGTH = 255


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

        Refuses a header that lacks a required column, or has a column the load reads twice
        (which of the two holds the values?), naming the column.
        """
        positions_by_header: dict[str, list[int]] = {}
        for index, name in enumerate(header):
            positions_by_header.setdefault(name.strip(), []).append(index)
        required = {f.name for f in CANONICAL_FIELDS[self.name] if f.required}
        positions: list[int | None] = []
        for canonical in CANONICAL_ORDER[self.name]:
            header_name = self.columns.get(canonical, canonical)
            found = positions_by_header.get(header_name, [])
            if len(found) > 1:
                raise UserFacingError(
                    f"{file_label} has the column '{header_name}' {len(found)} times"
                    f" (columns {', '.join(str(index + 1) for index in found)})"
                )
            position = found[0] if found else None
            if position is None and canonical in required:
                raise UserFacingError(
                    f"{file_label} is missing the required column '{header_name}'"
                    + (f" (mapped to {canonical})" if header_name != canonical else "")
                )
            positions.append(position)
        return positions


def load_source_specs(settings: Settings | None = None) -> dict[str, SourceSpec]:
    """The source specifications from the configured YAML file, over the shipped defaults
    (data/sources.yaml): a configuration of one's own needs only what differs from them.

    Refuses a configuration whose keys or values are not what the contract allows, naming the
    file and the key, so that a batch never starts on it.
    """
    settings = settings or get_settings()
    path = Path(settings.sources_config or DEFAULT_SOURCES_CONFIG)
    configured = _configured_sources(path)
    defaults = {}
    if path != DEFAULT_SOURCES_CONFIG and DEFAULT_SOURCES_CONFIG.exists():
        defaults = _configured_sources(DEFAULT_SOURCES_CONFIG)
    specs: dict[str, SourceSpec] = {}
    for name in SOURCE_NAMES:
        default, entry = defaults.get(name, {}), configured.get(name, {})
        entry = {
            **default,
            **entry,
            "columns": {**default.get("columns", {}), **entry.get("columns", {})},
            "formats": {**default.get("formats", {}), **entry.get("formats", {})},
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


# The text settings of a source entry; ``columns`` and ``formats`` map canonical fields to text.
TEXT_SETTINGS = ("file", "record_source", "timezone")
FIELD_MAPPINGS = ("columns", "formats")


def _configured_sources(path: Path) -> dict[str, dict]:
    """The ``sources`` section of a configuration file, checked: each source's entry holds
    only known settings, with text values, and a time zone the IANA database knows."""
    if not path.exists():
        raise UserFacingError(f"source configuration {path} does not exist")
    try:
        document = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as exc:
        raise UserFacingError(f"source configuration {path} is not valid YAML: {exc}") from exc

    def refuse(problem: str) -> UserFacingError:
        return UserFacingError(f"source configuration {path}: {problem}")

    if not isinstance(document, dict):
        raise refuse("the file must hold a mapping with a 'sources' key")
    sources = document.get("sources") or {}
    if not isinstance(sources, dict):
        raise refuse(f"'sources' must map source names ({', '.join(SOURCE_NAMES)}) to settings")
    unknown_sources = set(sources) - set(SOURCE_NAMES)
    if unknown_sources:
        raise refuse(
            f"'sources' names unknown source(s) {sorted(map(str, unknown_sources))};"
            f" the sources are {', '.join(SOURCE_NAMES)}"
        )
    checked: dict[str, dict] = {}
    for name, entry in sources.items():
        key = f"sources.{name}"
        entry = entry or {}
        if not isinstance(entry, dict):
            raise refuse(f"'{key}' must be a mapping of settings")
        unknown_settings = set(entry) - {*TEXT_SETTINGS, *FIELD_MAPPINGS}
        if unknown_settings:
            raise refuse(
                f"'{key}' has unknown setting(s) {sorted(map(str, unknown_settings))};"
                f" the settings are {', '.join((*TEXT_SETTINGS, *FIELD_MAPPINGS))}"
            )
        for setting in TEXT_SETTINGS:
            if setting in entry and not _is_text(entry[setting]):
                raise refuse(f"'{key}.{setting}' must be text, {_described(entry[setting])}")
        for setting in FIELD_MAPPINGS:
            mapping = entry.get(setting) or {}
            if not isinstance(mapping, dict):
                raise refuse(f"'{key}.{setting}' must map canonical fields to text")
            unknown_fields = set(mapping) - set(CANONICAL_ORDER[name])
            if unknown_fields:
                raise refuse(
                    f"'{key}.{setting}' names unknown field(s) {sorted(map(str, unknown_fields))}"
                )
            for field_name, value in mapping.items():
                if not _is_text(value):
                    raise refuse(
                        f"'{key}.{setting}.{field_name}' must be text, {_described(value)}"
                    )
        if "timezone" in entry and not _is_known_time_zone(entry["timezone"]):
            raise refuse(
                f"'{key}.timezone' {entry['timezone']!r} is not a known time zone;"
                " use an IANA name such as UTC or Europe/Berlin"
            )
        checked[name] = {**entry, **{s: entry.get(s) or {} for s in FIELD_MAPPINGS}}
    return checked


def _is_text(value: object) -> bool:
    return isinstance(value, str) and bool(value.strip())


def _described(value: object) -> str:
    """What a setting holds instead of text, for an error message."""
    empty = value is None or (isinstance(value, str) and not value.strip())
    return "but it is empty" if empty else f"not {value!r}"


def _is_known_time_zone(name: str) -> bool:
    """Whether the IANA time zone database knows ``name``. PostgreSQL, which converts the
    timestamps, keeps its own copy; start_batch asks it too (Python also takes 'localtime')."""
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return False
    return True
