"""docs/API_DOCUMENTATION.md against the OpenAPI schema the app publishes."""

from __future__ import annotations

import pytest

from api.main import create_app
from customer360.settings import PROJECT_ROOT, Settings

DOC = (PROJECT_ROOT / "docs" / "API_DOCUMENTATION.md").read_text(encoding="utf-8")
SCHEMA = create_app(Settings()).openapi()
OPERATIONS = [
    (method.upper(), path, operation)
    for path, operations in SCHEMA["paths"].items()
    for method, operation in operations.items()
]


@pytest.mark.parametrize(("method", "path", "operation"), OPERATIONS, ids=lambda v: str(v))
def test_every_operation_is_documented(method: str, path: str, operation: dict) -> None:
    assert f"`{method} {path}`" in DOC
    for parameter in operation.get("parameters", []):
        assert f"`{parameter['name']}`" in DOC, parameter["name"]
    for status in operation["responses"]:
        assert f"`{status}`" in DOC, status


def test_every_enum_value_is_documented() -> None:
    for _, _, operation in OPERATIONS:
        for parameter in operation.get("parameters", []):
            schema = parameter["schema"]
            options = [schema, *schema.get("anyOf", [])]
            for option in options:
                for value in option.get("enum", []):
                    assert f"`{value}`" in DOC, (parameter["name"], value)


def test_every_response_field_is_documented() -> None:
    for name, model in SCHEMA["components"]["schemas"].items():
        if name in {"HealthStatus", "FieldError", "ValidationErrorMessage", "ErrorMessage"}:
            continue
        for field in model.get("properties", {}):
            # As code: `field`, or as a key of an example body: "field".
            assert f"`{field}`" in DOC or f'"{field}"' in DOC, (name, field)
