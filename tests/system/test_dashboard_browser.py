"""The API Keys page in a real browser: Playwright driving Debian's Chromium against `keyledger serve`.

Each test signs in as an account of its own and saves a screenshot to test-artifacts/screenshots/.
Skipped without /usr/bin/chromium or the playwright package (CI installs both).
"""

import re
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
import requests

from tests.helpers import SECRET_SCANNING, SERVICE_TOKEN, GitHubSigner, leak_report, token_for
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
ZONE = "Europe/Zurich"  # the browser's zone: the expiry field is local time, the API's instant is UTC


@pytest.fixture(scope="module")
def github():
    """A P-256 key pair made here, as GitHub holds one, to sign secret-scanning reports."""
    return GitHubSigner()


@pytest.fixture(scope="module")
def service(server_url, template_database, github):
    keys = {"KEYLEDGER_SECRET_SCANNING_KEYS": github.keys_document()}
    with running_service(server_url, template_database, **keys) as base_url:
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
    context = browser.new_context(viewport={"width": 1280, "height": 900}, timezone_id=ZONE)
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


def create_over_api(service: str, account: str, name: str, **fields) -> dict:
    answer = api(service, account, "POST", f"{KEYS}/create/", json={"name": name, **fields})
    assert answer.status_code == 201, answer.text
    return answer.json()


def report_usage(service: str, account: str, key_id: str, costs: list[str], total_requests: int) -> None:
    """Usage as the gateway reports it (service token); returns once the key's total is `total_requests`."""
    now = datetime.now(UTC).isoformat()
    events = [
        {"request_id": f"req-{key_id}-{total_requests}-{n}", "key_id": key_id, "occurred_at": now,
         "cost_chf": cost, "units": 10, "endpoint": "/v1/chat/completions", "model": "m"}
        for n, cost in enumerate(costs)
    ]  # fmt: skip
    answer = requests.post(
        f"{service}/api/v1/usage/",
        json={"events": events},
        headers={"Authorization": f"Bearer {SERVICE_TOKEN}"},
        timeout=10,
    )
    assert answer.status_code == 202, answer.text
    deadline = time.monotonic() + 10
    while (
        api(service, account, "GET", f"{KEYS}/{key_id}/").json()["usage"]["total_requests"] != total_requests
    ):
        assert time.monotonic() < deadline, "usage never reached the projection"
        time.sleep(0.05)


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

    production.get_by_role("button", name="Edit Production backend").click()
    renamed = page.get_by_role("dialog", name="Edit Production backend").get_by_label("Name")
    renamed.fill("Batch jobs")
    renamed.press("Enter")
    expect(row(page, "Batch jobs")).to_be_visible()
    expect(page.get_by_role("button", name="Edit Batch jobs")).to_be_focused()
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
    expect(page.get_by_text("5 of 5 active keys")).to_be_visible()
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
    key_id = create_over_api(service, account, "Metered")["id"]
    report_usage(service, account, key_id, ["0.000150"] * 3, total_requests=3)
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


def key_row(page, key_id: str):
    return page.locator(f'tr[data-key-id="{key_id}"]')


def keys_of(service: str, account: str) -> dict[str, dict]:
    return {key["name"]: key for key in api(service, account, "GET", f"{KEYS}/").json()["data"]}


def test_create_with_expiry_and_limit_then_edit_the_limit_and_clear_both(page, service, account):
    local = (datetime.now(ZoneInfo(ZONE)) + timedelta(days=30)).replace(
        hour=12, minute=0, second=0, microsecond=0
    )
    page.get_by_role("button", name="Create New Key").click()
    dialog = page.get_by_role("dialog", name="Create New Key")
    dialog.get_by_label("Name").fill("Limited")
    dialog.get_by_label("Expires (optional)").fill(local.strftime("%Y-%m-%dT%H:%M"))
    limit = dialog.get_by_label("Monthly spend limit, CHF (optional)")
    for refused in ("1e3", "0", "-5", "2.1234567891"):  # the API's rule, checked before asking
        limit.fill(refused)
        dialog.get_by_role("button", name="Create").click()
        expect(dialog.get_by_role("alert")).to_contain_text("spend limit")
        expect(limit).to_have_attribute("aria-invalid", "true")
    assert keys_of(service, account) == {}
    limit.fill("25.5")
    dialog.get_by_role("button", name="Create").click()
    expect(dialog.get_by_label("Your new API key")).to_have_value(re.compile(r"^sk-"))
    page.get_by_role("button", name="Done").click()

    stored = keys_of(service, account)["Limited"]
    assert stored["monthly_spend_limit_chf"] == "25.500000000"
    assert datetime.fromisoformat(stored["expires_at"]) == local  # the local time, as a UTC instant
    limited = key_row(page, stored["id"])
    expect(limited).to_contain_text("Expires")
    expect(limited.locator("time").first).to_have_attribute("datetime", stored["expires_at"])
    expect(limited).to_contain_text("CHF 0.00 of 25.50 this month")
    expect(limited.get_by_role("progressbar", name="Spend this month for Limited")).to_have_attribute(
        "aria-valuemax", "25.50"
    )

    limited.get_by_role("button", name="Edit Limited").click()
    edit = page.get_by_role("dialog", name="Edit Limited")
    expect(edit.get_by_label("Monthly spend limit, CHF")).to_have_value("25.50")
    edit.get_by_label("Monthly spend limit, CHF").fill(
        "2000000000"
    )  # the rule's form, over the API's maximum
    edit.get_by_role("button", name="Save").click()
    refusal = api(
        service,
        account,
        "PATCH",
        f"{KEYS}/{stored['id']}/update/",
        json={"monthly_spend_limit_chf": "2000000000"},
    )
    assert refusal.status_code == 400
    expect(edit.get_by_role("alert")).to_have_text(refusal.json()["error"]["message"])
    edit.get_by_label("Monthly spend limit, CHF").fill("10")
    edit.get_by_role("button", name="Save").click()
    expect(edit).to_be_hidden()
    expect(limited).to_contain_text("CHF 0.00 of 10.00 this month")
    edited = keys_of(service, account)["Limited"]
    assert edited["monthly_spend_limit_chf"] == "10.000000000"
    assert edited["expires_at"] == stored["expires_at"], "an unchanged expiry is not sent again"

    limited.get_by_role("button", name="Edit Limited").click()
    edit.get_by_label("Expires").fill("")
    edit.get_by_label("Monthly spend limit, CHF").fill("")
    edit.get_by_role("button", name="Save").click()
    expect(edit).to_be_hidden()
    expect(limited).to_contain_text("CHF 0.00 this month")
    expect(limited.get_by_role("progressbar")).to_be_hidden()
    expect(limited).not_to_contain_text("Expires")
    cleared = keys_of(service, account)["Limited"]
    assert cleared["monthly_spend_limit_chf"] is None and cleared["expires_at"] is None


def rotate_in_page(page, name: str, grace: str) -> str:
    """Rotate through the dialog; the new key it shows once (still on screen)."""
    page.get_by_role("button", name=f"Rotate {name}").click()
    dialog = page.get_by_role("dialog", name=f"Rotate {name}?")
    expect(dialog.get_by_label("24 hours")).to_be_checked()  # the API's default
    dialog.get_by_label(grace).check()
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=SCREENSHOTS / f"rotate-dialog-{grace.split()[0].lower()}.png")
    dialog.get_by_role("button", name="Rotate key").click()
    shown = page.get_by_role("dialog", name=f"New key for {name}").get_by_label("Your new API key")
    expect(shown).to_have_value(re.compile(r"^sk-[0-9A-Za-z]{49}$"))
    return shown.input_value()


def test_rotate_with_an_hour_of_grace_shows_the_new_key_once_and_links_both_rows(page, service, account):
    activate_subscription(service, account)
    old = create_over_api(service, account, "Gateway", monthly_spend_limit_chf="5")
    old_secret = old["key"]
    create_over_api(service, account, "Other")
    page.reload()
    count = page.get_by_text(re.compile(r"^\d of 5 active keys$"))
    expect(count).to_have_text("2 of 5 active keys")

    secret = rotate_in_page(page, "Gateway", "1 hour")
    expect(page.get_by_role("dialog")).to_contain_text("keeps working until")
    page.get_by_role("button", name="Copy").click()
    assert page.evaluate("navigator.clipboard.readText()") == secret
    assert verify_status(service, secret) == 200 and verify_status(service, old_secret) == 200
    page.get_by_role("button", name="Done").click()
    expect(page.get_by_role("dialog")).to_be_hidden()
    assert secret not in page.content() and old_secret not in page.content()

    new = api(service, account, "GET", f"{KEYS}/").json()["data"][0]
    assert new["rotated_from"] == old["id"] and new["monthly_spend_limit_chf"] == "5.000000000"
    old_row, new_row = key_row(page, old["id"]), key_row(page, new["id"])
    expect(new_row.locator(".key-name")).to_be_focused()  # after Done: the new key's row
    expect(old_row).to_contain_text("Active")
    expect(old_row).to_contain_text("Works until")
    expect(old_row.get_by_role("button", name="Rotate Gateway")).to_have_count(0)  # rotated once only
    to_new = old_row.get_by_role("link", name=f"Gateway ({new['masked_key']})")
    expect(old_row).to_contain_text(f"Rotated → Gateway ({new['masked_key']})")
    expect(new_row).to_contain_text(f"Replaces Gateway ({old['masked_key']})")
    expect(count).to_have_text("2 of 5 active keys")  # the old key no longer takes a slot

    to_new.click()
    expect(new_row.locator(".key-name")).to_be_focused()
    new_row.get_by_role("link", name=f"Gateway ({old['masked_key']})").click()
    expect(old_row.locator(".key-name")).to_be_focused()
    assert "#" not in page.url


def test_rotate_now_revokes_the_old_key(page, service, account):
    activate_subscription(service, account)
    old = create_over_api(service, account, "Worker")
    page.reload()
    secret = rotate_in_page(page, "Worker", "No time: revoke it now")
    expect(page.get_by_role("dialog")).to_contain_text("The old key is revoked")
    page.get_by_role("button", name="Done").click()
    old_row = key_row(page, old["id"])
    expect(old_row.locator(".badge")).to_have_text("Revoked")
    expect(old_row).to_contain_text("Revoked when it was rotated")
    expect(old_row.get_by_role("button")).to_have_count(0)
    assert verify_status(service, old["key"]) == 403 and verify_status(service, secret) == 200
    expect(page.get_by_text("1 of 5 active keys")).to_be_visible()


def test_a_key_github_found_in_public_is_explained_with_where_it_was_found(page, service, account, github):
    activate_subscription(service, account)
    leaked = create_over_api(service, account, "Laptop script")
    page.reload()
    where = "https://github.com/octo/demo/blob/abc123/config.py"
    body = leak_report(leaked["key"], url=where)
    reported = requests.post(
        f"{service}{SECRET_SCANNING}",
        data=body,
        headers={**github.headers(body), "Content-Type": "application/json"},
        timeout=10,
    )
    assert reported.status_code == 200 and reported.json()[0]["label"] == "true_positive", reported.text
    row = key_row(page, leaked["id"])
    expect(row.locator(".badge")).to_have_text("Revoked", timeout=15_000)  # the page's 10 s refresh
    expect(row).to_contain_text("Revoked automatically: found in public")
    expect(row).to_contain_text(where)
    expect(row.get_by_role("link", name=where)).to_have_count(0)  # text, never a link to click
    assert verify_status(service, leaked["key"]) == 403


def test_month_to_date_against_a_small_limit_as_a_bar(page, service, account):
    activate_subscription(service, account)
    key = create_over_api(service, account, "Capped", monthly_spend_limit_chf="0.0005")
    report_usage(service, account, key["id"], ["0.000150"] * 3, total_requests=3)
    page.reload()
    capped = key_row(page, key["id"])
    bar = capped.get_by_role("progressbar", name="Spend this month for Capped")
    expect(capped).to_contain_text("CHF 0.00045 of 0.0005 this month")
    expect(bar).to_have_attribute("aria-valuenow", "0.00045")
    expect(bar).to_have_attribute("aria-valuemax", "0.0005")
    expect(bar).to_have_attribute("aria-valuetext", "CHF 0.00045 of 0.0005 this month")
    assert 85 < bar.evaluate("b => b.firstElementChild.offsetWidth / b.offsetWidth * 100") < 95
    expect(capped.get_by_text("Limit reached")).to_be_hidden()

    report_usage(service, account, key["id"], ["0.000150"], total_requests=4)
    page.reload()
    expect(capped).to_contain_text("CHF 0.0006 of 0.0005 this month")
    expect(capped.get_by_text("Limit reached: requests are refused")).to_be_visible()
    expect(bar).to_have_attribute("aria-valuenow", "0.0005")  # at most the maximum; the text says more
    assert bar.evaluate("b => b.firstElementChild.offsetWidth === b.offsetWidth")
    deadline = time.monotonic() + 10
    while verify_status(service, key["key"]) != 402:  # the page tells what verification answers
        assert time.monotonic() < deadline
        time.sleep(0.1)


def test_a_key_past_its_expiry_shows_expired_without_a_reload(page, service, account):
    expires_at = (datetime.now(UTC) + timedelta(seconds=3)).isoformat()
    key = create_over_api(service, account, "Short lived", expires_at=expires_at)
    create_over_api(service, account, "Long lived")
    page.reload()
    short = key_row(page, key["id"])
    expect(short.locator(".badge")).to_have_text("Active")
    expect(page.get_by_text("2 of 5 active keys")).to_be_visible()
    expect(short.locator(".badge")).to_have_text("Expired", timeout=20_000)  # the 10 s refresh
    expect(short).to_contain_text("Expired ")
    expect(short.get_by_role("button")).to_have_count(0)
    expect(page.get_by_text("1 of 5 active keys")).to_be_visible()


def test_at_phone_width_each_key_shows_its_name_status_month_and_actions(page, service, account):
    page.set_viewport_size({"width": 390, "height": 844})
    rotated = create_over_api(service, account, "A rather long key name for the staging backend")
    api(service, account, "POST", f"{KEYS}/{rotated['id']}/rotate/", json={"grace_period_seconds": 3600})
    capped = create_over_api(service, account, "Capped", monthly_spend_limit_chf="25")
    report_usage(service, account, capped["id"], ["1.25"], total_requests=1)
    revoked = create_over_api(service, account, "Old")
    api(service, account, "POST", f"{KEYS}/{revoked['id']}/revoke/")
    page.reload()
    body_rows = page.get_by_role("table", name="Your API keys").locator("tbody tr")
    expect(body_rows).to_have_count(4)
    expect(key_row(page, capped["id"])).to_contain_text("CHF 1.25 of 25.00 this month")
    buttons = 0
    for index in range(4):
        card = body_rows.nth(index)
        parts = [card.locator(".key-name"), card.locator(".badge"), card.locator(".month-text")]
        parts += [card.get_by_role("button").nth(n) for n in range(card.get_by_role("button").count())]
        buttons += len(parts) - 3
        for part in parts:
            box = part.bounding_box()
            assert box is not None and box["width"] > 0, part
            assert 0 <= box["x"] and box["x"] + box["width"] <= 390, (part, box)
    assert buttons == 2 + 3 + 3  # in grace: Edit, Revoke; the others: Edit, Rotate, Revoke; revoked: none
    assert page.evaluate("document.scrollingElement.scrollWidth") <= 390
