"""The API Keys page in a real browser: Playwright driving Debian's Chromium against `keyledger serve`.

Each test signs in as an account of its own and saves a screenshot to test-artifacts/screenshots/.
Skipped without /usr/bin/chromium or the playwright package (CI installs both).
"""

import re
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest
import requests

from tests.helpers import SERVICE_TOKEN, token_for
from tests.processes import activate_subscription, running_service

CHROMIUM = Path("/usr/bin/chromium")
playwright = pytest.importorskip("playwright.sync_api")
pytestmark = [
    pytest.mark.own_server,  # measures the browser and the service process, not the database server
    pytest.mark.skipif(not CHROMIUM.exists(), reason="Chromium is not installed (apt-get install chromium)"),
]
expect = playwright.expect

SCREENSHOTS = Path(__file__).resolve().parents[2] / "test-artifacts" / "screenshots"
KEYS = "/api/v1/accounts/user/api-keys"
FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update"]


@pytest.fixture(scope="module")
def service(server_url, template_database):
    with running_service(server_url, template_database) as base_url:
        yield base_url


@pytest.fixture(scope="module")
def browser(service):  # after the service: its fixture runs asyncio, which Playwright's loop forbids
    with playwright.sync_playwright() as driver:
        browser = driver.chromium.launch(executable_path=str(CHROMIUM), args=FLAGS)
        yield browser
        browser.close()


@pytest.fixture
def account(request) -> str:
    return "acct_browser_" + re.sub(r"[^A-Za-z0-9]", "", request.node.name)[-40:]


@pytest.fixture
def page(browser, service, account, request):
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    context.grant_permissions(["clipboard-read", "clipboard-write"], origin=service)
    page = context.new_page()
    page.goto(f"{service}/#token={token_for(account)}")
    expect(page.get_by_role("heading", name="API Keys", level=1)).to_be_visible()
    yield page
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=SCREENSHOTS / f"{request.node.name}.png", full_page=True)
    context.close()


def api(service: str, account: str, method: str, path: str, **kwargs) -> requests.Response:
    headers = {"Authorization": f"Bearer {token_for(account)}"}
    return requests.request(method, f"{service}{path}", headers=headers, timeout=10, **kwargs)


def verify_status(service: str, key: str) -> int:
    return requests.get(
        f"{service}/api/v1/auth/verify", headers={"Authorization": f"Bearer {key}"}, timeout=10
    ).status_code


def create_in_page(page, name: str) -> str:
    """Create a key through the dialog; the full key it shows once."""
    page.get_by_role("button", name="Create New Key").click()
    dialog = page.get_by_role("dialog")
    dialog.get_by_label("Name").fill(name)
    dialog.get_by_role("button", name="Create").click()
    shown = dialog.get_by_label("Your new API key")
    expect(shown).to_have_value(re.compile(r"^sk-[0-9A-Za-z]{49}$"))
    return shown.input_value()


def row(page, name: str):
    return page.get_by_role("table", name="Your API keys").locator("tbody tr").filter(has_text=name)


def test_sign_in_create_copy_once_then_masked_rename_and_revoke(page, service, account):
    assert "token=" not in page.url, "the token must leave the address bar"
    activate_subscription(service, account)
    key = create_in_page(page, "Production backend")
    page.get_by_role("button", name="Copy").click()
    expect(page.get_by_role("button", name="Copied")).to_be_visible()
    assert page.evaluate("navigator.clipboard.readText()") == key
    assert verify_status(service, key) == 200
    page.get_by_role("button", name="Done").click()
    expect(page.get_by_role("dialog")).to_be_hidden()
    assert key not in page.content()
    production = row(page, "Production backend")
    expect(production).to_contain_text(f"sk-***...{key[-4:]}")
    expect(production).to_contain_text("Active")

    production.get_by_role("button", name="Rename Production backend").click()
    renamed = page.get_by_label("New name for Production backend")
    renamed.fill("Batch jobs")
    renamed.press("Enter")
    expect(row(page, "Batch jobs")).to_be_visible()
    assert [k["name"] for k in api(service, account, "GET", f"{KEYS}/").json()["data"]] == ["Batch jobs"]

    row(page, "Batch jobs").get_by_role("button", name="Revoke Batch jobs").click()
    confirm = page.get_by_role("alertdialog", name="Revoke Batch jobs?")
    expect(confirm).to_be_visible()
    confirm.get_by_role("button", name="Revoke key").click()
    expect(row(page, "Batch jobs")).to_contain_text("Revoked")
    assert verify_status(service, key) == 403


def test_at_five_active_keys_the_create_button_explains_the_limit(page):
    create_button = page.get_by_role("button", name="Create New Key")
    for n in range(5):
        create_in_page(page, f"Key {n}")
        page.get_by_role("button", name="Done").click()
    expect(create_button).to_be_disabled()
    note = page.locator(f"#{create_button.get_attribute('aria-describedby')}")
    expect(note).to_be_visible()
    expect(note).to_contain_text("5 active keys")
    expect(note).to_contain_text("Revoke")


def test_an_api_error_shows_next_to_the_name_and_creates_nothing(page, service, account):
    page.get_by_role("button", name="Create New Key").click()
    dialog = page.get_by_role("dialog")
    dialog.get_by_label("Name").fill("x" * 101)
    dialog.get_by_role("button", name="Create").click()
    expect(dialog.get_by_role("alert")).to_contain_text("100")
    assert api(service, account, "GET", f"{KEYS}/").json()["data"] == []
    page.keyboard.press("Escape")
    expect(page.get_by_role("dialog")).to_be_hidden()


def test_usage_reported_through_the_api_shows_in_the_row_and_the_chart(page, service, account):
    key_id = api(service, account, "POST", f"{KEYS}/create/", json={"name": "Metered"}).json()["id"]
    now = datetime.now(UTC).isoformat()
    events = [
        {"request_id": f"req-{account}-{n}", "key_id": key_id, "occurred_at": now, "cost_chf": "0.000150",
         "units": 10, "endpoint": "/v1/chat/completions", "model": "m"}
        for n in range(3)
    ]  # fmt: skip
    answer = requests.post(
        f"{service}/api/v1/usage/",
        json={"events": events},
        headers={"Authorization": f"Bearer {SERVICE_TOKEN}"},
        timeout=10,
    )
    assert answer.status_code == 202, answer.text
    deadline = datetime.now(UTC).timestamp() + 10
    while api(service, account, "GET", f"{KEYS}/{key_id}/").json()["usage"]["total_requests"] != 3:
        assert datetime.now(UTC).timestamp() < deadline, "usage never reached the projection"
        time.sleep(0.05)
    page.reload()
    metered = page.locator(f'tr[data-key-id="{key_id}"]')
    expect(metered).to_contain_text("3")
    chart = metered.get_by_role("img", name="Requests and CHF per day over the last 30 days for Metered")
    expect(chart.locator("rect[data-date]")).to_have_count(30)
    today = chart.locator(f'rect[data-date="{datetime.now(UTC).date().isoformat()}"]')
    expect(today).to_have_attribute("data-requests", "3")
    expect(today).to_have_attribute("data-cost-chf", "0.000450000")
    expect(chart.locator("rect[data-date]").first).to_have_attribute("data-requests", "0")


def test_by_keyboard_on_a_phone_sized_screen(page):
    page.set_viewport_size({"width": 375, "height": 667})
    create_button = page.get_by_role("button", name="Create New Key")
    create_button.focus()
    page.keyboard.press("Enter")
    name = page.get_by_role("dialog").get_by_label("Name")
    expect(name).to_be_focused()
    page.keyboard.type("Phone")
    page.keyboard.press("Enter")
    expect(page.get_by_label("Your new API key")).to_be_visible()
    page.keyboard.press("Escape")
    expect(page.get_by_role("dialog")).to_be_hidden()
    expect(row(page, "Phone")).to_be_visible()
    assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth")
