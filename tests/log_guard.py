"""No secret in any log: every log line of the whole test session is scanned, and the session fails if
one holds an sk- key, a JWT, or the test service token or JWT secret.

What is scanned:
- every log record of the process: a handler on the root logger, with our loggers, aiohttp's and
  asyncpg's at DEBUG and all others at INFO for the session (LEVELS), so that the access log
  (`aiohttp.access`, INFO) is written as `keyledger serve` writes it, and more;
- what each test phase wrote to stderr (pytest captures file descriptor 2, which includes the
  output of subprocesses that inherit it, such as the `keyledger serve` of `tests/processes.py`'s `running_service`);
- every `*.log` file under the session's temporary folder, at the end: where the subprocess
  helpers (`tests/processes.py`, `tests/test_workers.py`) write what `keyledger serve` logs.

Standard output is not scanned: `keyledger token` prints a JWT there on purpose, and so does
`keyledger serve` without a JWT key (its development banner: the two lines let through in files).

A secret found is reported at the end of the run with where it was seen (which test, which logger
or file), and the exit status becomes 1 (tests failed) even if every test passed.
"""

import logging
import re
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.helpers import CHECKPOINT_KEY, JWT_SECRET, SERVICE_TOKEN

PATTERNS = {
    "an sk- API key": re.compile(r"sk-[0-9A-Za-z]{40,}"),  # the format of events/apikey.py
    "a JWT": re.compile(r"eyJ[\w-]+\.eyJ[\w-]+\.[\w-]+"),
    "the test service token": re.compile(re.escape(SERVICE_TOKEN)),
    "the test JWT secret": re.compile(re.escape(JWT_SECRET)),
    # A checkpoint signer key in the note format (events/note.py), any of them, and the test key's seed
    "a note signer key": re.compile(r"PRIVATE\+KEY\+"),
    "the test checkpoint key": re.compile(re.escape(CHECKPOINT_KEY.rsplit("+", 1)[1])),
}
_ANY = re.compile("|".join(f"(?:{pattern.pattern})" for pattern in PATTERNS.values()))
# The one secret printed on purpose: with no JWT key configured, `keyledger serve` prints a development
# JWT on standard output (SPEC, "Running it"), which tests/test_workers.py writes into its log file:
# as the banner's `export TOKEN=` line and in its dashboard link (the token in the URL fragment).
ON_PURPOSE = re.compile(
    r"\s*(?:export TOKEN=|Open the dashboard: http://[\w.:-]+/#token=)eyJ[\w-]+\.eyJ[\w-]+\.[\w-]+\s*"
)


def secrets_in(text: str) -> list[str]:
    """What kinds of secret the text holds (empty: none)."""
    if not _ANY.search(text):  # one pass for the common case
        return []
    return [what for what, pattern in PATTERNS.items() if pattern.search(text)]


def redacted(text: str) -> str:
    """The text with every secret replaced, so the report does not spread what it found."""
    return _ANY.sub("<redacted>", text)


@dataclass(frozen=True)
class Finding:
    what: list[str]
    where: str  # the logger, stream or file
    during: str  # the test, or "outside any test"
    line: str  # redacted

    def __str__(self) -> str:
        return f"{' and '.join(self.what)} in {self.where}, during {self.during}:\n    {self.line[:300]}"


class LogGuard:
    def __init__(self):
        self.findings: list[Finding] = []
        self.lines = 0
        self.files = 0
        self.current = "outside any test"

    def scan(self, text: str, where: str, during: str | None = None) -> None:
        self.lines += 1
        if secrets_in(text):
            for line in text.splitlines():
                if (what := secrets_in(line)) and not ON_PURPOSE.fullmatch(line):
                    self.findings.append(Finding(what, where, during or self.current, redacted(line)))

    def scan_file(self, path: Path, where: str) -> None:
        self.files += 1
        with path.open(errors="replace") as lines:
            for line in lines:
                self.scan(line.rstrip("\n"), where, during="the test that wrote it")


class _Handler(logging.Handler):
    """Formats every record as a log file would (message, then traceback) and scans it."""

    def __init__(self, guard: LogGuard):
        super().__init__(logging.DEBUG)
        self.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
        self._guard = guard

    def emit(self, record: logging.LogRecord) -> None:
        try:
            line = self.format(record)
        except Exception:  # a record that cannot be formatted is still scanned, as raw as it is
            line = f"{record.msg!r} {record.args!r}"
        self._guard.scan(line, f"the log of {record.name}")


# Every logger of ours and of the libraries that see requests, at DEBUG; all others at INFO.
LEVELS = {
    "": logging.INFO,
    "service": logging.DEBUG,
    "projections": logging.DEBUG,
    "events": logging.DEBUG,
    "aiohttp": logging.DEBUG,  # aiohttp.access (INFO), aiohttp.server (DEBUG: bad requests)
    "asyncpg": logging.DEBUG,
}
_HANDLER = pytest.StashKey[_Handler]()
_LEVELS_BEFORE = pytest.StashKey[dict[str, int]]()
_TEMP = pytest.StashKey[Path]()
_guard = LogGuard()  # this session's; replaced at configure


def pytest_configure(config: pytest.Config) -> None:
    global _guard
    _guard = LogGuard()
    handler = _Handler(_guard)
    config.stash[_HANDLER] = handler
    config.stash[_LEVELS_BEFORE] = {name: logging.getLogger(name).level for name in LEVELS}
    logging.getLogger().addHandler(handler)
    for name, level in LEVELS.items():
        logging.getLogger(name).setLevel(level)


@pytest.fixture(scope="session", autouse=True)
def _log_guard_temporary_folder(request, tmp_path_factory) -> None:
    """Where the tests' files are, so that the `*.log` files among them are scanned at the end."""
    request.config.stash[_TEMP] = tmp_path_factory.getbasetemp()


def pytest_runtest_logstart(nodeid: str) -> None:
    _guard.current = nodeid


def pytest_runtest_logfinish(nodeid: str) -> None:
    _guard.current = "outside any test"


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    for name, content in report.sections:  # each phase's report repeats the earlier phases' sections
        if name == f"Captured stderr {report.when}":
            _guard.scan(content, f"stderr ({report.when})", during=report.nodeid)


@pytest.hookimpl(tryfirst=True)  # before the tmp_path plugin may remove the folder
def pytest_sessionfinish(session: pytest.Session) -> None:
    guard = _guard
    if (folder := session.config.stash.get(_TEMP, None)) is not None and folder.is_dir():
        for path in sorted(folder.rglob("*.log")):
            if path.is_file():
                guard.scan_file(path, f"the file {path.relative_to(folder)}")
    if guard.findings and session.exitstatus == pytest.ExitCode.OK:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def pytest_terminal_summary(terminalreporter, config: pytest.Config) -> None:
    guard = _guard
    if not guard.findings:
        terminalreporter.write_line(
            f"log guard: no secret in {guard.lines} log lines and {guard.files} log files", green=True
        )
        return
    terminalreporter.write_sep("=", f"log guard: {len(guard.findings)} secrets in the logs", red=True)
    for finding in guard.findings[:50]:
        terminalreporter.write_line(str(finding), red=True)
    if len(guard.findings) > 50:
        terminalreporter.write_line(f"… and {len(guard.findings) - 50} more", red=True)


def pytest_unconfigure(config: pytest.Config) -> None:
    logging.getLogger().removeHandler(config.stash[_HANDLER])
    for name, level in config.stash[_LEVELS_BEFORE].items():
        logging.getLogger(name).setLevel(level)
