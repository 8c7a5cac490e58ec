"""The API Keys page in a real browser: Playwright (sync API) driving Debian's Chromium headless
against a real `keyledger serve`, to the page's contract (roles, accessible names, labels, data
attributes; docs/dashboard.md).

One service and one browser for the module; each test signs in as an account of its own, in a
browser context of its own with clipboard permissions, and saves a screenshot named after it to
test-artifacts/screenshots/ (also when it fails). A test also fails when the page throws or the
browser refuses something under the Content-Security-Policy.

Skipped without /usr/bin/chromium (`apt-get install chromium`; .ci/run installs it) or the playwright
package (the dev extra). Playwright never downloads a browser here: it runs the system's Chromium.
"""

import re
import time
from collections.abc import Callable, Iterator
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pytest
import requests

from tests.conftest import SERVICE_TOKEN, token_for
from tests.processes import running_service

CHROMIUM = Path("/usr/bin/chromium")
pytestmark = pytest.mark.skipif(
    not CHROMIUM.exists(),
    reason="no /usr/bin/chromium: the browser tests need Debian's Chromium (apt-get install chromium)",
)
sync_api = pytest.importorskip(
    "playwright.sync_api", reason="the playwright package is missing (pip install -e '.[dev]')"
)
expect = sync_api.expect

FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-quic",
    "--no-first-run",
    "--disable-sync",
]
SCREENSHOTS = Path(__file__).resolve().parent.parent / "test-artifacts" / "screenshots"
DESKTOP = {"width": 1280, "height": 900}
PHONE = {"width": 375, "height": 667}

KEYS = "/api/v1/accounts/user/api-keys/"
KEY_FORMAT = re.compile(r"sk-[0-9A-Za-z]{49}")
COLUMNS = [
    "Name",
    "Key",
    "Status",
    "Created",
    "Last used",
    "Requests",
    "Total CHF",
    "Last 30 days CHF",
    "Usage (30 days)",
    "Actions",
]
WARNING = (
    "This key is shown only once. It cannot be retrieved later. Store it securely before closing this dialog."
)


# ---------------------------------------------------------------- the service, the browser, a page


@pytest.fixture(scope="module")
def service(server_url, template_database) -> Iterator[str]:
    with running_service(server_url, template_database) as base_url:
        yield base_url


@pytest.fixture(scope="module")
def browser(service):
    # Requested after the service: its fixture calls asyncio.run, which fails inside Playwright's loop.
    with sync_api.sync_playwright() as driver:
        browser = driver.chromium.launch(executable_path=str(CHROMIUM), args=FLAGS, headless=True)
        yield browser
        browser.close()


@pytest.fixture
def account(request) -> str:
    """An account of this test's own: no test sees another's keys."""
    return "acct_browser_" + re.sub(r"[^A-Za-z0-9]", "", request.node.name.removeprefix("test_"))[:48]


@pytest.fixture
def open_page(browser, service, request) -> Iterator[Callable[..., "sync_api.Page"]]:
    """Opens the page in a fresh browser context (clipboard allowed): signed in through the URL
    fragment when given a JWT. At the end: a screenshot of the last page opened, and no page error."""
    contexts, problems, pages = [], [], []

    def open_(jwt: str | None, viewport: dict[str, int] = DESKTOP) -> "sync_api.Page":
        context = browser.new_context(viewport=viewport)
        context.grant_permissions(["clipboard-read", "clipboard-write"], origin=service)
        contexts.append(context)
        page = context.new_page()
        page.on("pageerror", lambda error: problems.append(f"uncaught: {error}"))
        page.on(
            "console",
            lambda message: (
                problems.append(message.text) if "Content Security Policy" in message.text else None
            ),
        )
        page.goto(f"{service}/#token={jwt}" if jwt else f"{service}/")
        pages.append(page)
        return page

    yield open_
    try:
        if pages:
            SCREENSHOTS.mkdir(parents=True, exist_ok=True)
            pages[-1].screenshot(path=SCREENSHOTS / f"{request.node.name}.png", full_page=True)
    finally:
        for context in contexts:
            context.close()
    assert not problems, f"the page reported errors: {problems}"


@pytest.fixture
def page(open_page, account) -> "sync_api.Page":
    """The page, signed in as this test's account through `/#token=<JWT>`."""
    page = open_page(token_for(account))
    expect(page.get_by_role("heading", name="API Keys", level=1)).to_be_visible()
    return page


# ---------------------------------------------------------------- the API, as a script would use it


def api(service: str, account: str, method: str, path: str, **kwargs) -> requests.Response:
    headers = {"Authorization": f"Bearer {token_for(account)}"}
    return requests.request(method, f"{service}{path}", headers=headers, timeout=10, **kwargs)


def listed(service: str, account: str) -> list[dict]:
    answer = api(service, account, "GET", KEYS)
    assert answer.status_code == 200, answer.text
    return answer.json()["data"]


def create_by_api(service: str, account: str, name: str) -> dict:
    answer = api(service, account, "POST", f"{KEYS}create/", json={"name": name})
    assert answer.status_code == 201, answer.text
    return answer.json()


def internal(service: str, method: str, path: str, **kwargs) -> requests.Response:
    headers = {"Authorization": f"Bearer {SERVICE_TOKEN}"}
    return requests.request(method, f"{service}{path}", headers=headers, timeout=10, **kwargs)


def activate(service: str, account: str) -> None:
    answer = internal(
        service,
        "PUT",
        f"/api/v1/internal/accounts/{account}/subscription",
        json={"status": "active", "plan": "pro"},
    )
    assert answer.status_code == 200, answer.text


def verify_status(service: str, key: str) -> int:
    headers = {"Authorization": f"Bearer {key}"}
    return requests.get(f"{service}/api/v1/auth/verify", headers=headers, timeout=10).status_code


def poll(predicate: Callable[[], bool], within: float = 5.0) -> None:
    deadline = time.monotonic() + within
    while not predicate():
        assert time.monotonic() < deadline, f"still not true after {within} s"
        time.sleep(0.05)


# ---------------------------------------------------------------- the page's parts


def table(page):
    return page.get_by_role("table", name="Your API keys")


def row(page, key_id: str):
    return table(page).locator(f'tr[data-key-id="{key_id}"]')


def cell(row_, column: str):
    return row_.locator(":scope > td, :scope > th").nth(COLUMNS.index(column))


def create_button(page):
    return page.get_by_role("button", name="Create New Key")


def create_dialog(page):
    return page.get_by_role("dialog", name="Create New Key")


def create_in_page(page, name: str) -> str:
    """Create a key through the dialog and close it; the full key it showed once."""
    create_button(page).click()
    dialog = create_dialog(page)
    dialog.get_by_label("Name").fill(name)
    dialog.get_by_role("button", name="Create").click()
    shown = dialog.get_by_label("Your new API key")
    expect(shown).to_have_value(KEY_FORMAT)
    key = shown.input_value()
    dialog.get_by_role("button", name="Done").click()
    expect(dialog).to_be_hidden()
    return key


def key_anywhere(page, key: str) -> bool:
    """Whether the full key is anywhere in the page: its HTML, its text, or the value of a field."""
    in_fields = page.evaluate(
        "key => [...document.querySelectorAll('input, textarea')].some((field) => field.value.includes(key))",
        key,
    )
    return key in page.content() or key in page.evaluate("document.body.innerText") or in_fields


def held_by_the_script(page, key: str) -> bool:
    """Whether any object the page's JavaScript can still reach holds the key: a V8 heap snapshot,
    taken after a garbage collection, lists every live string."""
    session = page.context.new_cdp_session(page)
    chunks: list[str] = []
    session.on("HeapProfiler.addHeapSnapshotChunk", lambda event: chunks.append(event["chunk"]))
    session.send("HeapProfiler.enable")
    session.send("HeapProfiler.collectGarbage")
    session.send("HeapProfiler.takeHeapSnapshot", {"reportProgress": False})
    session.detach()
    assert chunks, "no heap snapshot"
    return key in "".join(chunks)


def tab_to(page, target, presses: int = 30) -> None:
    """Press Tab until the target has the focus, as a keyboard user would."""
    for _ in range(presses):
        page.keyboard.press("Tab")
        if target.evaluate("element => element === document.activeElement"):
            return
    raise AssertionError(f"{target} never got the focus in {presses} presses of Tab")


def same_instant(shown: str | None, api_value: str) -> bool:
    return shown is not None and datetime.fromisoformat(shown) == datetime.fromisoformat(api_value)


# ---------------------------------------------------------------- the tests


def test_sign_in_create_copy_once_then_masked_rename_and_revoke(page, service, account):
    # Signed in by the fragment, which left the address bar at once.
    in_address_bar = "token=" in page.url or page.evaluate("location.hash") != ""
    assert not in_address_bar, "the token is still in the address bar"  # (not printed: it is a secret)
    expect(page).to_have_title("API Keys · keyledger")
    expect(table(page).locator("thead th")).to_have_text(COLUMNS)
    expect(page.get_by_text("No keys yet. Create one to call the API.")).to_be_visible()

    # Create: the dialog asks for a name, then shows the key once.
    create_button(page).click()
    dialog = create_dialog(page)
    name = dialog.get_by_label("Name")
    expect(name).to_be_focused()
    expect(name).to_have_attribute("placeholder", "e.g. Production backend")
    name.fill("Production backend")
    dialog.get_by_role("button", name="Create").click()
    expect(dialog.get_by_role("heading", name="Save your key")).to_be_visible()
    expect(dialog).to_contain_text(WARNING)
    shown = dialog.get_by_label("Your new API key")
    expect(shown).to_have_value(KEY_FORMAT)
    expect(shown).not_to_be_editable()
    key = shown.input_value()

    # Copy puts it on the clipboard, and it is a working key of this account.
    dialog.get_by_role("button", name="Copy").click()
    expect(dialog.get_by_role("button", name="Copied")).to_be_visible()
    copied = page.evaluate("navigator.clipboard.readText()") == key
    assert copied, "the clipboard does not hold the key the dialog shows"
    assert verify_status(service, key) == 402  # a real key; the account has no subscription yet
    activate(service, account)
    assert verify_status(service, key) == 200

    # Done: the key leaves the page; the table lists it masked.
    dialog.get_by_role("button", name="Done").click()
    expect(dialog).to_be_hidden()
    leaked = key_anywhere(page, key)
    assert not leaked, "the full key is still in the page after Done"
    held = held_by_the_script(page, key)
    assert not held, "the page's script still holds the full key after Done"
    [created] = listed(service, account)
    production = row(page, created["id"])
    expect(production).to_have_count(1)
    expect(cell(production, "Name")).to_have_text("Production backend")
    expect(cell(production, "Key")).to_contain_text(created["masked_key"])
    assert created["masked_key"].startswith("sk-***") and created["masked_key"].endswith(key[-4:])
    expect(cell(production, "Status")).to_have_text("Active")
    assert same_instant(
        cell(production, "Created").locator("time").get_attribute("datetime"), created["created_at"]
    )
    expect(cell(production, "Last used")).to_have_text("Never")
    expect(cell(production, "Requests")).to_have_text("0")

    # Rename in place: type, Enter.
    production.get_by_role("button", name="Rename Production backend").click()
    new_name = production.get_by_role("textbox", name="New name for Production backend")
    expect(new_name).to_have_value("Production backend")
    new_name.fill("Batch jobs")
    new_name.press("Enter")
    expect(new_name).to_be_hidden()
    expect(cell(production, "Name")).to_have_text("Batch jobs")
    assert [k["name"] for k in listed(service, account)] == ["Batch jobs"]

    # Revoke asks first: Cancel keeps the key.
    production.get_by_role("button", name="Revoke Batch jobs").click()
    confirm = page.get_by_role("alertdialog", name="Revoke Batch jobs?")
    expect(confirm).to_be_visible()
    expect(confirm).to_contain_text("cannot be undone")
    confirm.get_by_role("button", name="Cancel").click()
    expect(confirm).to_be_hidden()
    expect(cell(production, "Status")).to_have_text("Active")
    assert verify_status(service, key) == 200

    # Revoke key: the row says so at once, and the key is refused.
    production.get_by_role("button", name="Revoke Batch jobs").click()
    page.get_by_role("alertdialog", name="Revoke Batch jobs?").get_by_role(
        "button", name="Revoke key"
    ).click()
    expect(page.get_by_role("alertdialog")).to_be_hidden()
    expect(cell(production, "Status")).to_have_text("Revoked")
    expect(production.get_by_role("button", name="Revoke Batch jobs")).to_have_count(0)
    expect(production.get_by_role("button", name="Rename Batch jobs")).to_have_count(0)
    assert [k["status"] for k in listed(service, account)] == ["revoked"]
    assert verify_status(service, key) == 403


def test_sign_in_form_without_a_token_and_sign_out(open_page, account):
    page = open_page(None)
    token_field = page.get_by_label("Session token")
    expect(token_field).to_be_visible()
    expect(page.get_by_text("make run").first).to_be_visible()
    expect(page.get_by_role("heading", name="API Keys", level=1)).to_be_hidden()

    # A token the API refuses (401) keeps the form, with the reason.
    token_field.fill("not-a-jwt")
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("alert").filter(has_text=re.compile(r"\S"))).to_be_visible()
    expect(page.get_by_role("heading", name="API Keys", level=1)).to_be_hidden()

    jwt = token_for(account)
    page.get_by_label("Session token").fill(jwt)
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("heading", name="API Keys", level=1)).to_be_visible()
    expect(page.get_by_text("No keys yet. Create one to call the API.")).to_be_visible()
    stored = page.evaluate("sessionStorage.getItem('keyledger.token')")
    assert stored == jwt, "the token is not kept in sessionStorage"

    page.reload()  # the tab keeps its session
    expect(page.get_by_role("heading", name="API Keys", level=1)).to_be_visible()

    page.get_by_role("button", name="Sign out").click()
    expect(page.get_by_label("Session token")).to_be_visible()
    assert page.evaluate("sessionStorage.getItem('keyledger.token')") is None
    page.reload()
    expect(page.get_by_label("Session token")).to_be_visible()
    expect(page.get_by_role("heading", name="API Keys", level=1)).to_be_hidden()


def test_at_five_active_keys_the_create_button_explains_the_limit(page, service, account):
    button = create_button(page)
    for n in range(5):
        expect(button).to_be_enabled()
        create_in_page(page, f"Key {n}")
    expect(button).to_be_disabled()  # `disabled` or aria-disabled="true"
    described_by = (button.get_attribute("aria-describedby") or "").split()
    assert described_by, "the disabled button does not point at its explanation (aria-describedby)"
    note = page.locator(", ".join(f"[id='{id_}']" for id_ in described_by)).filter(has_text="5 active keys")
    expect(note).to_be_visible()
    expect(note).to_contain_text("Revoke")
    button.click(force=True)  # a click on the disabled button opens nothing
    expect(create_dialog(page)).to_be_hidden()
    assert len(listed(service, account)) == 5

    # Revoking one frees a slot, as the note says.
    page.get_by_role("button", name="Revoke Key 0").click()
    page.get_by_role("alertdialog", name="Revoke Key 0?").get_by_role("button", name="Revoke key").click()
    expect(button).to_be_enabled()
    expect(note).to_be_hidden()


def test_the_limit_reached_elsewhere_shows_the_apis_409_in_the_dialog(page, service, account):
    create_button(page).click()  # the page knows of no key yet
    dialog = create_dialog(page)
    for n in range(5):  # meanwhile another tab or a script takes every slot
        create_by_api(service, account, f"Script {n}")
    refused = api(service, account, "POST", f"{KEYS}create/", json={"name": "One more"})
    assert refused.status_code == 409 and refused.json()["error"]["type"] == "key_limit_reached"
    dialog.get_by_label("Name").fill("From the page")
    dialog.get_by_role("button", name="Create").click()
    expect(dialog.get_by_role("alert")).to_have_text(refused.json()["error"]["message"])
    assert len(listed(service, account)) == 5
    page.keyboard.press("Escape")
    expect(dialog).to_be_hidden()
    # The page learns of the five keys (it refreshes after every action, and every 10 s).
    expect(create_button(page)).to_be_disabled(timeout=12_000)


def test_an_invalid_name_shows_the_apis_message_in_the_dialog_and_creates_nothing(page, service, account):
    dialog = create_dialog(page)
    for invalid in ["     ", "x" * 101]:
        refused = api(service, account, "POST", f"{KEYS}create/", json={"name": invalid})
        assert refused.status_code in (400, 422), refused.text
        create_button(page).click()
        expect(dialog.get_by_role("alert")).to_be_hidden()  # no stale error from the last attempt
        dialog.get_by_label("Name").fill(invalid)
        dialog.get_by_role("button", name="Create").click()
        expect(dialog.get_by_role("alert")).to_have_text(refused.json()["error"]["message"])
        expect(dialog.get_by_label("Your new API key")).to_be_hidden()
        page.keyboard.press("Escape")
        expect(dialog).to_be_hidden()
    assert listed(service, account) == []
    expect(table(page).locator("tbody tr[data-key-id]")).to_have_count(0)
    expect(page.get_by_text("No keys yet. Create one to call the API.")).to_be_visible()

    # Corrected, the same dialog creates the key.
    create_button(page).click()
    dialog.get_by_label("Name").fill("  Valid name  ")
    dialog.get_by_role("button", name="Create").click()
    expect(dialog.get_by_label("Your new API key")).to_have_value(KEY_FORMAT)
    expect(dialog.get_by_role("alert")).to_be_hidden()
    assert [k["name"] for k in listed(service, account)] == ["Valid name"]


def test_usage_reported_through_the_api_shows_in_the_row_and_the_chart(page, service, account):
    key_id = create_by_api(service, account, "Metered")["id"]
    moment = datetime.now(UTC)
    events = [
        {
            "request_id": f"req-{account}-{n}",
            "key_id": key_id,
            "occurred_at": moment.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "cost_chf": "0.000150",
            "units": 812,
            "endpoint": "/v1/chat/completions",
            "model": "gpt-test",
        }
        for n in range(3)
    ]
    answer = internal(service, "POST", "/api/v1/usage/", json={"events": events})
    assert answer.status_code == 202, answer.text
    # The projection shows usage within about a second: wait for the API, then look at the page.
    poll(lambda: api(service, account, "GET", f"{KEYS}{key_id}/").json()["usage"]["total_requests"] == 3)
    key = api(service, account, "GET", f"{KEYS}{key_id}/").json()

    page.reload()
    metered = row(page, key_id)
    expect(cell(metered, "Requests")).to_have_text("3")
    for column in ("Total CHF", "Last 30 days CHF"):
        shown = cell(metered, column)
        expect(shown).to_have_text(re.compile(r"^CHF \d+\.\d{2,}$"))
        amount = Decimal(shown.inner_text().removeprefix("CHF "))
        places = -amount.as_tuple().exponent
        # CHF 0.00045 rounded to the places shown, and not shown as nothing spent
        assert amount != 0 and amount == Decimal("0.00045").quantize(Decimal(1).scaleb(-places)), amount
        for attribute in ("data-chf", "title"):
            if (exact := shown.get_attribute(attribute)) is not None:
                assert "0.000450000" in exact, f"{column} {attribute}={exact!r}"
    assert same_instant(
        cell(metered, "Last used").locator("time").get_attribute("datetime"), key["last_used_at"]
    )

    chart = metered.get_by_role("img", name="Requests and CHF per day over the last 30 days for Metered")
    expect(chart).to_be_visible()
    bars = chart.locator("rect")
    expect(bars).to_have_count(30)
    dates = [date.fromisoformat(bars.nth(n).get_attribute("data-date")) for n in range(30)]
    today = moment.date()
    assert dates[-1] in (today, today + timedelta(days=1))  # oldest first, today last (UTC)
    assert dates == [dates[-1] - timedelta(days=29 - n) for n in range(30)]
    used = chart.locator(f'rect[data-date="{today.isoformat()}"]')
    expect(used).to_have_attribute("data-requests", "3")
    expect(used).to_have_attribute("data-cost-chf", "0.000450000")
    expect(used.locator("title")).to_have_text(f"{today.isoformat()}: 3 requests, CHF 0.000450000")
    quiet = chart.locator(f'rect[data-date="{(today - timedelta(days=1)).isoformat()}"]')
    expect(quiet).to_have_attribute("data-requests", "0")
    expect(quiet).to_have_attribute("data-cost-chf", "0.000000000")


def test_by_keyboard_alone(page, service, account):
    # Create: Tab to the button, Enter; the name; Enter submits; Escape closes; focus comes back.
    button = create_button(page)
    tab_to(page, button)
    page.keyboard.press("Enter")
    dialog = create_dialog(page)
    expect(dialog.get_by_label("Name")).to_be_focused()
    page.keyboard.type("Keyboard")
    page.keyboard.press("Enter")
    expect(dialog.get_by_label("Your new API key")).to_have_value(KEY_FORMAT)
    page.keyboard.press("Escape")
    expect(dialog).to_be_hidden()
    expect(button).to_be_focused()
    [created] = listed(service, account)
    keyboard_row = row(page, created["id"])
    expect(cell(keyboard_row, "Name")).to_have_text("Keyboard")

    # Rename: Escape cancels, Enter saves.
    tab_to(page, keyboard_row.get_by_role("button", name="Rename Keyboard"))
    page.keyboard.press("Enter")
    new_name = page.get_by_role("textbox", name="New name for Keyboard")
    expect(new_name).to_be_focused()
    page.keyboard.press("Escape")
    expect(new_name).to_be_hidden()
    expect(cell(keyboard_row, "Name")).to_have_text("Keyboard")
    tab_to(page, keyboard_row.get_by_role("button", name="Rename Keyboard"))
    page.keyboard.press("Enter")
    expect(new_name).to_be_focused()
    page.keyboard.press("Control+A")
    page.keyboard.type("Typed")
    page.keyboard.press("Enter")
    expect(cell(keyboard_row, "Name")).to_have_text("Typed")
    assert [k["name"] for k in listed(service, account)] == ["Typed"]

    # Revoke: Escape closes the confirmation (nothing revoked), the confirmation's button revokes.
    revoke = keyboard_row.get_by_role("button", name="Revoke Typed")
    tab_to(page, revoke)
    page.keyboard.press("Enter")
    confirm = page.get_by_role("alertdialog", name="Revoke Typed?")
    expect(confirm).to_be_visible()
    page.keyboard.press("Escape")
    expect(confirm).to_be_hidden()
    expect(revoke).to_be_focused()
    expect(cell(keyboard_row, "Status")).to_have_text("Active")
    page.keyboard.press("Enter")
    expect(confirm).to_be_visible()
    tab_to(page, confirm.get_by_role("button", name="Revoke key"))
    page.keyboard.press("Enter")
    expect(cell(keyboard_row, "Status")).to_have_text("Revoked")


def test_on_a_phone_sized_screen(open_page, service, account):
    ids = [create_by_api(service, account, name)["id"] for name in ("Mobile app (iOS, production)", "Cron")]
    page = open_page(token_for(account), viewport=PHONE)
    expect(page.get_by_role("heading", name="API Keys", level=1)).to_be_visible()
    expect(create_button(page)).to_be_in_viewport()
    for key_id in ids:
        expect(row(page, key_id)).to_be_visible()
        name = cell(row(page, key_id), "Name").bounding_box()
        assert name is not None and 0 <= name["x"] and name["x"] + name["width"] <= PHONE["width"], name
    assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth"), (
        "the page scrolls sideways"
    )

    # The dialog fits the screen too, with the key and its Copy button.
    create_button(page).click()
    dialog = create_dialog(page)
    dialog.get_by_label("Name").fill("Phone")
    dialog.get_by_role("button", name="Create").click()
    expect(dialog.get_by_label("Your new API key")).to_have_value(KEY_FORMAT)
    expect(dialog.get_by_role("button", name="Copy")).to_be_in_viewport()
    box = dialog.bounding_box()
    assert box is not None and 0 <= box["x"] and box["x"] + box["width"] <= PHONE["width"], box
    assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth"), (
        "the page scrolls sideways"
    )
    dialog.get_by_role("button", name="Done").click()
    expect(table(page).locator("tbody tr[data-key-id]")).to_have_count(3)
