"""Staging quality checks: every landed row is either typed, hashed and staged for the vault,
or quarantined with the reason it failed. Row-count thresholds guard the whole batch.

Each source is checked by one set-based statement built from its rules below: it classifies
every landed row (the first failing rule wins), writes the failures to ``audit.quarantine``
and the rest, with hash keys and hashdiff computed once, to ``staging.stg_<source>``.
"""

from __future__ import annotations

from dataclasses import dataclass

from customer360.errors import UserFacingError
from customer360.sources import CANONICAL_ORDER, MAX_KEY_LENGTH, MAX_TEXT_LENGTH, SourceSpec

GHOST_KEY = "00000000-0000-0000-0000-000000000000"
# What is trimmed from both ends of every value, as raw_vault.normalise_key trims keys.
TRIMMED_CHARACTERS = r"E' \t\r\n'"
# The business key of the ghost customer and product (sql/03); no delivered row may take it.
GHOST_BUSINESS_KEY = "-1"
# The statuses the contract knows; the business views count every one but the last two as
# revenue.
ORDER_STATUSES = ("completed", "shipped", "pending", "cancelled", "returned")


# PostgreSQL's own input functions decide what parses, cheaply; the shape tests first
# refuse what those functions also take but the contract does not: words ('now', 'today',
# 'allballs'), eras ('2024-01-01 BC'), a 12-hour clock ('10:00 PM'), unpadded fields. They
# test separators at fixed places and the characters used: a full regular expression costs
# the staging statement about a tenth more.
def _iso_date_invalid(value: str) -> str:
    return (
        f"(length({value}) <> 10 or substr({value}, 5, 1) <> '-' or substr({value}, 8, 1) <> '-'"
        f" or {value} ~ '[^-0-9]' or not pg_input_is_valid({value}, 'date'))"
    )


def _iso_timestamp_invalid(value: str) -> str:
    # PostgreSQL would carry a 60th second into the next minute and round digits beyond the
    # microsecond (.9999999 into the next second, even the next day) rather than refuse them.
    # An offset can carry a time in the year 1 or 9999 out of the years 1 to 9999 in UTC,
    # where the clients reading it (Python's datetime among them) cannot hold it.
    return (
        f"(substr({value}, 5, 1) <> '-' or substr({value}, 8, 1) <> '-'"
        f" or substr({value}, 11, 1) not in (' ', 'T') or substr({value}, 14, 1) <> ':'"
        f" or {value} ~ '[^-0-9:. TZz+]' or substr({value}, 17, 3) = ':60'"
        f" or (strpos({value}, '.') > 0 and {value} ~ '\\.[0-9]{{7}}')"
        f" or not pg_input_is_valid({value}, 'timestamptz')"
        f" or case when left({value}, 4) in ('0001', '9999')"
        f" then not {_in_calendar(f'{value}::timestamptz')} else false end)"
    )


def _in_calendar(timestamp: str) -> str:
    """SQL: the timestamp falls in the years 1 to 9999 in UTC."""
    return (
        f"({timestamp} >= '0001-01-01 00:00:00+00'::timestamptz"
        f" and {timestamp} < '10000-01-01 00:00:00+00'::timestamptz)"
    )


# Plain decimals only: PostgreSQL also reads 'NaN', 'Infinity', hexadecimal, octal and binary
# ('0x10', '0o17', '0b1010') and digits grouped with underscores, which the contract does not.
def _number_invalid(value: str, pg_type: str) -> str:
    return f"(not pg_input_is_valid({value}, '{pg_type}') or {value} ~ '[^-+.0-9eE]')"


def _sql_literal(text: str) -> str:
    """A configured text as an SQL string literal in a statement run with parameters."""
    return "'" + text.replace("'", "''").replace("%", "%%") + "'"


class ThresholdBreachedError(UserFacingError):
    """A source has fewer valid rows than its configured minimum; the batch fails."""


@dataclass(frozen=True)
class Rule:
    """A quality rule: rows for which ``failing`` is true are quarantined with ``reason``."""

    reason: str
    failing: str  # SQL over the landed row, true when the row fails
    detail: str  # SQL text expression explaining the failure


@dataclass(frozen=True)
class StagingSpec:
    """How one source's landed rows become staged rows."""

    source: str
    key_column: str
    # staged hash key column -> SQL; ``landed.business_key`` is the row's key, normalised
    hash_keys: dict[str, str]
    rules: tuple[Rule, ...]
    typed: dict[str, str]  # staged column -> SQL, evaluated only for passing rows
    payload: tuple[str, ...]  # the typed columns the hashdiff covers
    free_text: tuple[str, ...]  # the payload columns that may hold any text
    # Values computed once for each passing row before it is typed, step by step (each step
    # name -> SQL, reading the steps before it), which the hash keys read as ``landed.<name>``.
    derived: tuple[dict[str, str], ...] = ()
    # Transactions: the statement also lists the rows it linked to a ghost record.
    lists_ghost_links: bool = False


def clean(column: str) -> str:
    """A landed text column, trimmed, with empty meaning missing (computed once per row by
    the staging statement)."""
    return f"landed.clean_{column}"


def _quoted(column: str) -> str:
    return f"coalesce(quote_literal(landed.{column}), 'nothing')"


def _local_time_skipped(value: str) -> str:
    """SQL: a valid ISO timestamp without an offset names a local time that the session's time
    zone skips (a daylight-saving gap). PostgreSQL would move it by the gap rather than refuse
    it, as a configured format does."""
    has_offset = f"({value} ~ '[zZ+]' or strpos(substr({value}, 11), '-') > 0)"
    return (
        f"case when {has_offset} then false"
        f" else {value}::timestamptz::timestamp <> {value}::timestamp end"
    )


def _date_rule(column: str, fmt: str, kind: str, timezone: str = "UTC") -> tuple[Rule, str]:
    value = clean(column)
    not_valid = (
        f"'{column} ' || {_quoted(column)} || ' is not a valid {kind} ('"
        f" || {_sql_literal(fmt)} || ')'"
    )
    detail = not_valid
    if fmt.lower() == "iso":
        pg_type = "date" if kind == "date" else "timestamptz"
        shape_invalid = (_iso_date_invalid if kind == "date" else _iso_timestamp_invalid)(value)
        invalid = shape_invalid
        parsed = f"{value}::{pg_type}"
        # UTC has no gaps: sources in it skip the test.
        if kind != "date" and timezone.upper() != "UTC":
            invalid = f"({shape_invalid} or {_local_time_skipped(value)})"
            detail = (
                f"case when {value} is null or {shape_invalid} then {not_valid}"
                f" else '{column} ' || {_quoted(column)} || ' is a local time that '"
                f" || {_sql_literal(timezone)} || ' skips (clocks moved forward)' end"
            )
    else:
        parsed = f"staging.try_to_timestamp({value}, {_sql_literal(fmt)})"
        invalid = f"{parsed} is null"
        if kind == "date":
            parsed += "::date"
    failing = f"{value} is not null and {invalid}"
    if kind != "date":
        failing = f"{value} is null or {invalid}"
    return Rule("invalid_date", failing, detail), parsed


# Numbers as the contract writes them: whole, and plain decimals.
WHOLE_NUMBER = r"'^[-+]?[0-9]+$'"
PLAIN_DECIMAL = r"'^[-+]?([0-9]+[.]?[0-9]*|[.][0-9]+)([eE][-+]?[0-9]+)?$'"
# What a number of each type the contract uses can hold, in words.
RANGES = {
    "integer": "an integer lies between -2147483648 and 2147483647",
    "numeric(5, 4)": "numeric(5, 4) holds at most 1 digit before the point,"
    " once rounded to 4 decimal places",
    "numeric(12, 2)": "numeric(12, 2) holds at most 10 digits before the point,"
    " once rounded to 2 decimal places",
    "numeric(14, 2)": "numeric(14, 2) holds at most 12 digits before the point,"
    " once rounded to 2 decimal places",
}


def _not_a_number_because(value: str, pg_type: str) -> str:
    """SQL: why a value its type refuses is refused, read off its shape."""
    if pg_type == "integer":
        return (
            f"case when {value} ~ {WHOLE_NUMBER} then ' is out of range: {RANGES[pg_type]}'"
            f" when {value} ~ {PLAIN_DECIMAL} then ' is not written as a whole number'"
            " else ' is not a number' end"
        )
    return (
        f"case when {value} ~ {PLAIN_DECIMAL} then ' is out of range: {RANGES[pg_type]}'"
        " else ' is not a number' end"
    )


def _number_rule(columns: dict[str, str], optional: tuple[str, ...] = ()) -> Rule:
    """Rows where any listed column (column -> its SQL type) is missing, not a number, or a
    number its type cannot hold."""
    checks, details = [], []
    for column, pg_type in columns.items():
        value = clean(column)
        check = f"({value} is null or {_number_invalid(value, pg_type)})"
        if column in optional:
            check = f"({value} is not null and {_number_invalid(value, pg_type)})"
        checks.append(check)
        details.append(
            f"case when {check} then '{column} ' || {_quoted(column)}"
            f" || {_not_a_number_because(value, pg_type)} end"
        )
    failing = " or ".join(checks)
    return Rule("invalid_number", failing, f"concat_ws(', ', {', '.join(details)})")


def _decimal_places_rule(columns: dict[str, int]) -> Rule:
    """Rows where a number (column -> the decimal places its type keeps) has more places than
    that: storing it would round it silently."""
    checks = {
        column: f"min_scale({clean(column)}::numeric) > {places}"
        for column, places in columns.items()
    }
    details = ", ".join(
        f"case when {checks[column]} then '{column} ' || {_quoted(column)}"
        f" || ' has more than {places} decimal places' end"
        for column, places in columns.items()
    )
    return Rule("invalid_number", " or ".join(checks.values()), f"concat_ws(', ', {details})")


def _reserved_key_rule(key_column: str) -> Rule:
    """Rows whose key is the ghost record's: loading one would clash with the ghost row."""
    return Rule(
        "reserved_key",
        f"business_key = '{GHOST_BUSINESS_KEY}'",
        f"'{key_column} ' || quote_literal(landed.{key_column})"
        " || ' is reserved for the ghost record'",
    )


def _key_rule(key_column: str) -> Rule:
    """Rows whose key the vault cannot take: one longer than any key it indexes (its hub's
    index would refuse it and fail the whole batch), or one holding '|', which could make
    the parts of two composite keys ('A||B' and 'C', 'A' and 'B||C') hash alike."""
    trimmed = f"btrim(landed.{key_column}, {TRIMMED_CHARACTERS})"
    too_long = f"length({trimmed}) > {MAX_KEY_LENGTH}"
    return Rule(
        "invalid_key",
        f"{too_long} or strpos(business_key, '|') > 0",
        f"case when {too_long} then '{key_column} is ' || length({trimmed})"
        f" || ' characters long; a key has at most {MAX_KEY_LENGTH}'"
        f" else '{key_column} ' || quote_literal({trimmed})"
        " || ' holds |, which separates the parts of composite keys' end",
    )


def _missing_rule(reason: str, columns: tuple[str, ...]) -> Rule:
    """Rows where any listed column is empty or blank."""
    names = ", ".join(
        f"case when {clean(column)} is null then '{column}' end" for column in columns
    )
    failing = " or ".join(f"{clean(column)} is null" for column in columns)
    return Rule(reason, failing, f"'no value for ' || concat_ws(', ', {names})")


def _text_length_rule(columns: tuple[str, ...]) -> Rule:
    """Rows where a text column holds more than MAX_TEXT_LENGTH characters."""
    checks = {column: f"length({clean(column)}) > {MAX_TEXT_LENGTH}" for column in columns}
    lengths = ", ".join(
        f"case when {check} then '{column} is ' || length({clean(column)})"
        " || ' characters long' end"
        for column, check in checks.items()
    )
    return Rule(
        "invalid_value",
        " or ".join(checks.values()),
        f"concat_ws(', ', {lengths}) || '; a value has at most {MAX_TEXT_LENGTH}'",
    )


def _allowed_values_rule(column: str, allowed: tuple[str, ...]) -> Rule:
    """Rows whose ``column`` holds none of ``allowed`` (compared in lower case)."""
    listed = ", ".join(f"'{value}'" for value in allowed)
    return Rule(
        "invalid_value",
        f"lower({clean(column)}) not in ({listed})",
        f"'{column} ' || {_quoted(column)} || ' is not one of {', '.join(allowed)}'",
    )


def staging_specs(specs: dict[str, SourceSpec]) -> dict[str, StagingSpec]:
    """The staging rules of each source, with the date formats its configuration gives."""
    signup_rule, signup_date = _date_rule(
        "signup_date", specs["customers"].formats.get("signup_date", "iso"), "date"
    )
    ts_rule, transaction_ts = _date_rule(
        "transaction_ts",
        specs["transactions"].formats.get("transaction_ts", "iso"),
        "timestamp",
        specs["transactions"].timezone,
    )
    customer_text = ("first_name", "last_name", "email", "phone", "city", "state", "country")
    # The free text of each source: its length is checked, and the hashdiff escapes it.
    customer_free_text = (*customer_text, "customer_segment")
    product_free_text = ("product_name", "category", "brand")
    return {
        "customers": StagingSpec(
            source="customers",
            key_column="customer_id",
            hash_keys={"customer_hk": "raw_vault.hash_normalised_key(landed.business_key)"},
            rules=(
                _reserved_key_rule("customer_id"),
                _key_rule("customer_id"),
                _missing_rule("missing_value", ("first_name", "last_name", "email")),
                _text_length_rule(customer_free_text),
                signup_rule,
            ),
            typed={
                **{column: clean(column) for column in customer_text},
                "signup_date": signup_date,
                "customer_segment": clean("customer_segment"),
            },
            payload=(*customer_text, "signup_date", "customer_segment"),
            free_text=customer_free_text,
        ),
        "products": StagingSpec(
            source="products",
            key_column="product_id",
            hash_keys={"product_hk": "raw_vault.hash_normalised_key(landed.business_key)"},
            rules=(
                _reserved_key_rule("product_id"),
                _key_rule("product_id"),
                _missing_rule("missing_value", ("product_name", "category")),
                _text_length_rule(product_free_text),
                _number_rule({"unit_price": "numeric(12, 2)", "cost": "numeric(12, 2)"}),
                _decimal_places_rule({"unit_price": 2, "cost": 2}),
            ),
            typed={
                "product_name": clean("product_name"),
                "category": clean("category"),
                "brand": clean("brand"),
                "unit_price": f"{clean('unit_price')}::numeric(12, 2)",
                "cost": f"{clean('cost')}::numeric(12, 2)",
            },
            payload=("product_name", "category", "brand", "unit_price", "cost"),
            free_text=product_free_text,
        ),
        "transactions": StagingSpec(
            source="transactions",
            key_column="transaction_id",
            hash_keys={
                "order_hk": "raw_vault.hash_normalised_key(landed.business_key)",
                "customer_hk": "case when landed.customer_known then landed.customer_hash"
                f" else '{GHOST_KEY}' end",
                "product_hk": "case when landed.product_known then landed.product_hash"
                f" else '{GHOST_KEY}' end",
                "customer_order_hk": "raw_vault.hash_normalised_key(case when"
                f" landed.customer_known then landed.customer_key else '{GHOST_BUSINESS_KEY}'"
                " end, landed.business_key)",
                "order_product_hk": "raw_vault.hash_normalised_key(landed.business_key,"
                " case when landed.product_known"
                f" then landed.product_key else '{GHOST_BUSINESS_KEY}' end)",
            },
            derived=(
                {
                    "customer_key": "raw_vault.normalise_key(landed.customer_id)",
                    "product_key": "raw_vault.normalise_key(landed.product_id)",
                },
                {
                    "customer_hash": "raw_vault.hash_normalised_key(landed.customer_key)",
                    "product_hash": "raw_vault.hash_normalised_key(landed.product_key)",
                },
                {
                    "customer_known": _known(
                        "landed.customer_hash", "customer_hk", "customer_id", "customers"
                    ),
                    "product_known": _known(
                        "landed.product_hash", "product_hk", "product_id", "products"
                    ),
                },
            ),
            rules=(
                _key_rule("transaction_id"),
                # An order must name its customer and product: an unknown one is linked to
                # the ghost record, a missing one is a missing part of the link's key.
                _missing_rule("missing_key", ("customer_id", "product_id")),
                _missing_rule("missing_value", ("order_status",)),
                _text_length_rule(("payment_method",)),
                _number_rule(
                    {
                        "quantity": "integer",
                        "unit_price": "numeric(12, 2)",
                        "discount": "numeric(5, 4)",
                        "total_amount": "numeric(14, 2)",
                    },
                    optional=("discount",),
                ),
                _decimal_places_rule({"unit_price": 2, "discount": 4, "total_amount": 2}),
                Rule(
                    "invalid_number",
                    f"coalesce({clean('discount')}::numeric, 0) not between 0 and 1",
                    f"'discount ' || {_quoted('discount')} || ' is not between 0 and 1'",
                ),
                ts_rule,
                Rule(
                    "negative_quantity",
                    f"{clean('quantity')}::integer <= 0",
                    f"'quantity ' || {_quoted('quantity')} || ' is not positive'",
                ),
                _allowed_values_rule("order_status", ORDER_STATUSES),
            ),
            typed={
                "customer_id": "landed.customer_key",
                "product_id": "landed.product_key",
                "quantity": f"{clean('quantity')}::integer",
                "unit_price": f"{clean('unit_price')}::numeric(12, 2)",
                # A missing discount is zero, typed as a delivered one is, so both hash alike.
                "discount": f"coalesce({clean('discount')}, '0')::numeric(5, 4)",
                "total_amount": f"{clean('total_amount')}::numeric(14, 2)",
                "transaction_ts": transaction_ts,
                "payment_method": clean("payment_method"),
                "order_status": f"lower({clean('order_status')})",
            },
            payload=(
                "quantity",
                "unit_price",
                "discount",
                "total_amount",
                "transaction_ts",
                "payment_method",
                "order_status",
            ),
            free_text=("payment_method", "order_status"),
            lists_ghost_links=True,
        ),
    }


def _known(hash_key: str, hub_key: str, business_key: str, source: str) -> str:
    """True when ``hash_key`` is a key of the hub or of this batch's staged rows (a transaction
    may name a customer or product that arrives in the same batch). PostgreSQL hashes the
    known keys once and probes that table per row."""
    return (
        f"coalesce({hash_key} in ("
        f"select {hub_key} from raw_vault.hub_{source[:-1]}"
        f" where {business_key} <> '{GHOST_BUSINESS_KEY}'"
        f" union all select {hub_key} from staging.stg_{source}"
        " where batch_id = %(batch_id)s), false)"
    )


def _as_text(column: str, free_text: bool) -> str:
    r"""A typed payload column as the hashdiff reads it: timestamps in UTC, so that it ignores
    session zones; free text with '\', '|' and '^' escaped, so that no value can pass for
    the separator ('||') or the missing-value marker ('^^') and two different payloads always
    hash apart. Values without those characters read as they are."""
    if column.endswith("_ts"):
        return f"(typed.{column} at time zone 'UTC')::text"
    if free_text:
        escaped = f"replace(typed.{column}, '\\', '\\\\')"
        for character in ("|", "^"):
            escaped = f"replace({escaped}, '{character}', '\\{character}')"
        return escaped
    return f"typed.{column}::text"


def _in_share(business_key: str) -> str:
    """SQL: the normalised business key falls in the statement's share of the keys."""
    return (
        f"mod(hashtext(coalesce({business_key}, ''))::bigint + 2147483648, %(shares)s) = %(share)s"
    )


def staging_statement(spec: StagingSpec) -> str:
    """The one statement that quarantines failing rows and stages the rest."""
    raw_columns = CANONICAL_ORDER[spec.source]
    reasons = "\n".join(
        f"                       when {rule.failing} then '{rule.reason}'" for rule in spec.rules
    )
    details = "\n".join(
        f"                       when reason = '{rule.reason}' and ({rule.failing})"
        f" then {rule.detail}"
        for rule in spec.rules
    )
    raw_row = ", ".join(f"'{column}', landed.{column}" for column in raw_columns)
    cleaned = ", ".join(
        f"nullif(btrim(keyed.{column}, {TRIMMED_CHARACTERS}), '') as clean_{column}"
        for column in raw_columns
        if column != spec.key_column
    )
    hash_columns = list(spec.hash_keys)
    typed_columns = list(spec.typed)
    hashdiff = "md5(concat_ws('||', {}))::uuid".format(
        ", ".join(
            f"coalesce({_as_text(column, column in spec.free_text)}, '^^')"
            for column in spec.payload
        )
    )
    derived = "".join(
        f"""
        derived_{number} as (
            select landed.*, {", ".join(f"{sql} as {name}" for name, sql in step.items())}
            from {"winners" if number == 1 else f"derived_{number - 1}"} as landed
            offset 0  -- computed once per row
        ),
"""
        for number, step in enumerate(spec.derived, start=1)
    )
    passing = f"derived_{len(spec.derived)}" if spec.derived else "winners"
    key = spec.key_column
    statement = f"""
        with keyed as (
            select raw.*, raw_vault.normalise_key(raw.{key}) as business_key
            from staging.raw_{spec.source} as raw
            where raw.batch_id = %(batch_id)s
        ),

        -- This statement's share of the keys (see check_source); copies of a row and rows
        -- sharing a key always fall in the same share. Copies of a row are numbered from the
        -- last line up: the last copy is the one that may win its key, as any last row does.
        landed as (
            select keyed.*,
                   row_number() over copies as copy_number,
                   first_value(line_number) over copies as last_copy_line,
                   {cleaned}
            from keyed
            where {_in_share("business_key")}
            window copies as (partition by business_key, {", ".join(raw_columns)}
                              order by line_number desc)
        ),

        classified as (
            select landed.*,
                   case
                       when business_key is null then 'missing_key'
                       when copy_number > 1 then 'duplicate_row'
{reasons}
                   end as reason
            from landed
            offset 0  -- the reason is read twice below: classify each row once
        ),

        -- Several valid rows for one key: the last line wins, earlier ones are superseded.
        judged as materialized (
            select classified.*,
                   max(line_number) filter (where reason is null)
                       over (partition by business_key) as winning_line
            from classified
        ),

        -- The explanation is computed for failing rows only.
        quarantined as (
            insert into audit.quarantine
                (batch_id, source, source_file, line_number, business_key, reason, detail, raw_row)
            select %(batch_id)s, '{spec.source}', landed.source_file, landed.line_number,
                   landed.{key}, coalesce(reason, 'duplicate_key'),
                   case
                       when reason is null then 'superseded by line ' || winning_line
                       when reason = 'missing_key' and business_key is null then '{key} is missing'
                       when reason = 'duplicate_row' then 'exact copy of line ' || last_copy_line
{details}
                   end,
                   jsonb_build_object({raw_row})
            from judged as landed
            where reason is not null or line_number <> winning_line
            returning 1
        ),

        winners as (
            select landed.*
            from judged as landed
            where reason is null and line_number = winning_line
        ),
{derived}
        typed as (
            select landed.line_number,
                   landed.business_key,
                   {", ".join(f"{sql} as {column}" for column, sql in spec.hash_keys.items())},
                   {", ".join(f"{sql} as {column}" for column, sql in spec.typed.items())}
            from {passing} as landed
            offset 0  -- the hashdiff reads the typed columns again
        )
    """
    insert_staged = f"""
        insert into staging.stg_{spec.source} (
            batch_id, line_number, record_source, {", ".join(hash_columns)}, hashdiff,
            {key if spec.source != "transactions" else "order_id"}, {", ".join(typed_columns)}
        )
        select %(batch_id)s, typed.line_number, %(record_source)s,
               {", ".join(f"typed.{c}" for c in hash_columns)}, {hashdiff},
               typed.business_key, {", ".join(f"typed.{c}" for c in typed_columns)}
        from typed
    """
    if not spec.lists_ghost_links:
        return statement + insert_staged
    return f"""{statement},

        staged as (
            {insert_staged}
            returning line_number, customer_hk, product_hk, customer_id, product_id
        ),
{_ghost_linked_listing(raw_row)}"""


def _ghost_linked_listing(raw_row: str) -> str:
    """The end of the transactions' staging statement: the staged rows (``staged``) linked to
    a ghost record are listed in the quarantine too, so a report shows them, with their landed
    rows (``judged``); they are loaded ('ghost_linked'), not rejected. When the customer or
    product was in this delivery but quarantined, the detail says so and why."""
    return f"""
        refused as (
            select source, raw_vault.normalise_key(business_key) as business_key,
                   string_agg(distinct reason, ', ' order by reason) as reasons
            from audit.quarantine
            where batch_id = %(batch_id)s and source in ('customers', 'products')
              and disposition = 'rejected'
            group by 1, 2
        )

        insert into audit.quarantine
            (batch_id, source, source_file, line_number, business_key, reason, detail,
             disposition, raw_row)
        select %(batch_id)s, 'transactions', landed.source_file, staged.line_number,
               landed.business_key,
               case when staged.customer_hk = '{GHOST_KEY}' then 'unknown_customer'
                    else 'unknown_product' end,
               concat_ws('; ',
                   case when staged.customer_hk = '{GHOST_KEY}'
                        then 'customer ' || coalesce(quote_literal(landed.customer_id), 'nothing')
                             || ' is not in the customer hub'
                             || coalesce(' (its row in this delivery was quarantined: '
                                         || refused_customer.reasons || ')', '') end,
                   case when staged.product_hk = '{GHOST_KEY}'
                        then 'product ' || coalesce(quote_literal(landed.product_id), 'nothing')
                             || ' is not in the product hub'
                             || coalesce(' (its row in this delivery was quarantined: '
                                         || refused_product.reasons || ')', '') end)
               || '; linked to the ghost record',
               'ghost_linked',
               jsonb_build_object({raw_row})
        from staged
        join judged as landed on landed.line_number = staged.line_number
        left join refused as refused_customer
            on staged.customer_hk = '{GHOST_KEY}' and refused_customer.source = 'customers'
           and refused_customer.business_key = staged.customer_id
        left join refused as refused_product
            on staged.product_hk = '{GHOST_KEY}' and refused_product.source = 'products'
           and refused_product.business_key = staged.product_id
        where staged.customer_hk = '{GHOST_KEY}' or staged.product_hk = '{GHOST_KEY}'
    """


def check_source(
    cursor, spec: SourceSpec, staging_spec: StagingSpec, batch_id: int, share: int, shares: int
) -> None:
    """Run one source's quality checks on one share of its business keys.

    The shares split the work so that several connections check a source side by side;
    each key, with its duplicates, lies in exactly one share. Customers and products are
    checked before transactions, which refer to them (and list, as they are staged, the
    orders linked to a ghost record).
    """
    cursor.execute("set local timezone = %s", (spec.timezone,))
    cursor.execute(
        staging_statement(staging_spec),
        {
            "batch_id": batch_id,
            "record_source": spec.record_source,
            "share": share,
            "shares": shares,
        },
    )
