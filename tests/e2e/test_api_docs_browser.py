"""Swagger UI and ReDoc in headless Chromium (Debian's package), served with no internet.

The test authorises with an API key in the Authorize dialog, runs "Try it out" on
GET /customers, checks the response shown against the database and keeps a screenshot.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import psycopg2
import pytest
from api_support import TEST_API_KEYS, running_api

from customer360.settings import Settings

pytestmark = pytest.mark.browser

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox", "--disable-background-networking", "--disable-gpu",
    "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-quic",
]  # fmt: skip


@pytest.fixture(scope="module")
def docs_url(loaded_warehouse: Settings, tmp_path_factory: pytest.TempPathFactory) -> str:
    with running_api(loaded_warehouse, tmp_path_factory.mktemp("api-logs"), "browser") as url:
        yield url


@pytest.fixture(scope="module")
def browser():
    if not CHROMIUM.exists() or shutil.which("chromium") is None:
        pytest.fail("Debian's chromium is required: apt-get install -y chromium")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(
            executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True
        )
        yield chromium
        chromium.close()


def test_swagger_ui_try_it_out_lists_customers(
    browser, docs_url: str, loaded_warehouse: Settings, artifacts_dir: Path
) -> None:
    page = browser.new_page(viewport={"width": 1400, "height": 1800})
    outside_requests: list[str] = []
    page.on(
        "request",
        lambda request: (
            None
            if request.url.startswith(docs_url) or request.url.startswith("data:")
            else outside_requests.append(request.url)
        ),
    )
    page.goto(f"{docs_url}/docs", wait_until="networkidle")
    title = page.locator(".information-container .title").first
    title.wait_for()
    assert "Customer 360 API" in title.inner_text()

    page.click("button.authorize")
    page.fill(".modal-ux input#api_key_value", TEST_API_KEYS[0])
    page.click(".modal-ux .auth-btn-wrapper button.authorize")
    page.click(".modal-ux .auth-btn-wrapper button.btn-done")

    operation = page.locator("#operations-customers-list_customers_customers_get")
    operation.locator(".opblock-summary").click()
    operation.locator("button.try-out__btn").click()
    operation.locator("input[placeholder='limit']").fill("5")
    operation.locator("button.execute").click()
    status_cell = operation.locator(".live-responses-table .response .response-col_status")
    status_cell.wait_for()
    assert status_cell.first.inner_text().strip() == "200"

    body_text = operation.locator(".live-responses-table .response-col_description pre").first
    shown = json.loads(body_text.inner_text())
    conn = psycopg2.connect(loaded_warehouse.dsn)
    with conn.cursor() as cur:
        cur.execute("select count(*) from business_vault.vw_customer_360")
        total = cur.fetchone()[0]
        cur.execute(
            "select customer_id from business_vault.vw_customer_360 order by customer_id limit 5"
        )
        first_ids = [row[0] for row in cur.fetchall()]
    conn.close()
    assert shown["total"] == total
    assert [item["customer_id"] for item in shown["items"]] == first_ids

    operation.screenshot(path=str(artifacts_dir / "api-swagger-try-it-out.png"))
    assert outside_requests == []


def test_redoc_renders_offline(browser, docs_url: str, artifacts_dir: Path) -> None:
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    page.goto(f"{docs_url}/redoc", wait_until="networkidle")
    page.locator("h2", has_text="List customer 360 profiles").first.wait_for()
    assert page.locator("h1", has_text="Customer 360 API").count() >= 1
    page.screenshot(path=str(artifacts_dir / "api-redoc.png"))
