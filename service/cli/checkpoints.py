"""The checkpoints' signer key, `keyledger audit verifier-key`, and `keyledger audit verify` of
signed checkpoints (SPEC, "Verifiable history").

Without KEYLEDGER_CHECKPOINT_KEY, `keyledger serve` makes a signer key once and keeps it in the data
folder (SIGNER_FILE, mode 0600); it is written only there and only ever read back from there: what
is printed, logged or answered is the verifier key. `audit verify --key K --checkpoint C` checks a
checkpoint's signature; a second `--checkpoint` also checks that the newer log extends the older
one with the consistency proof `--url` serves; an export FILE is checked for the inclusion of its
events in the checkpoint's tree (service/cli/inclusion.py); `--history` checks a key's history with
the proofs it carries (service/cli/history.py).
"""

import argparse
import binascii
import os
import urllib.error
import urllib.request
from pathlib import Path

import msgspec

from events import merkle
from events.note import Checkpoint, NoteError, Signer, Verifier, open_note
from service.cli import history, inclusion
from service.config import ConfigError, Settings, from_environment
from service.http.app import checkpoint_signer, key_name

SIGNER_FILE = "checkpoint-signer.key"
TOKEN_VARIABLE = "KEYLEDGER_AUDIT_TOKEN"  # the service token or an auditor's JWT, for --url


def kept_signer(settings: Settings, make: bool) -> Signer | None:
    """The configured signer key, else the one kept in the data folder (made there now when `make`)."""
    if settings.checkpoint_key is not None:
        return checkpoint_signer(settings)
    path = settings.data_dir / SIGNER_FILE
    if path.exists():
        try:
            return Signer.parse(path.read_text())
        except (OSError, NoteError) as error:
            raise ConfigError(f"{path} holds no note signer key ({type(error).__name__}): {error}") from None
    if not make:
        return None
    signer = Signer.generate(key_name(settings.log_origin))
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "w") as file:
        file.write(signer.secret_text() + "\n")
    return signer


def verifier_key(args: argparse.Namespace) -> int:
    signer = kept_signer(from_environment(), make=False)
    if signer is None:
        raise SystemExit(
            "keyledger audit verifier-key: no signer key yet: set KEYLEDGER_CHECKPOINT_KEY, or run "
            "keyledger serve once, which makes one in the data folder"
        )
    print(signer.verifier.text())
    return 0


def _text_of(source: str, what: str) -> str:
    """A file's text, or the text itself when it is not a file."""
    path = Path(source)
    try:
        return path.read_text() if path.is_file() else source
    except (OSError, UnicodeDecodeError) as error:
        raise SystemExit(f"keyledger audit verify: cannot read the {what} {source}: {error}") from None


def _fetch(url: str, accept_json: bool):
    request = urllib.request.Request(url)
    token = os.environ.get(TOKEN_VARIABLE)
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=30) as answer:
            body = answer.read()
    except urllib.error.HTTPError as error:
        raise SystemExit(
            f"keyledger audit verify: {url.split('?')[0]} answered {error.code}: {_error_message(error)}"
        ) from None
    except (urllib.error.URLError, OSError) as error:
        raise SystemExit(f"keyledger audit verify: cannot fetch {url.split('?')[0]}: {error}") from None
    return msgspec.json.decode(body) if accept_json else body.decode()


def _error_message(error: urllib.error.HTTPError) -> str:
    """The message of the service's error envelope, else the HTTP reason."""
    try:
        return str(msgspec.json.decode(error.read())["error"]["message"])
    except (OSError, msgspec.DecodeError, KeyError, TypeError):
        return str(error.reason)


def _checkpoint(source: str, verifier: Verifier, url: str | None) -> Checkpoint:
    """A signed checkpoint from a file, or fetched: `latest` or a tree size, from --url."""
    if source == "latest" or source.isdigit():
        if not url:
            raise SystemExit("keyledger audit verify: --checkpoint latest or N fetches from --url")
        query = "" if source == "latest" else f"?tree_size={source}"
        note = _fetch(f"{url.rstrip('/')}/api/v1/audit/checkpoint{query}", accept_json=False)
    else:
        note = _text_of(source, "checkpoint")
    try:
        return Checkpoint.parse(open_note(note, verifier))
    except NoteError as error:
        raise SystemExit(f"keyledger audit verify: BROKEN: {source}: {error}") from None


def verify(args: argparse.Namespace) -> int:
    """`audit verify --key … --checkpoint …|--history …`: 0 when everything holds, 1 when something
    does not."""
    if args.history and (args.checkpoint or args.file or args.db or args.digest):
        raise SystemExit("keyledger audit verify: --history takes only --key (its checkpoint is in the file)")
    if not args.key or not (args.checkpoint or args.history) or args.db or args.digest:
        raise SystemExit(
            "keyledger audit verify: checking checkpoints needs --key and --checkpoint or --history "
            "(no --db, --digest)"
        )
    try:
        verifier = Verifier.parse(_text_of(args.key, "verifier key"))
    except NoteError as error:
        raise SystemExit(f"keyledger audit verify: --key: {error}") from None
    if args.history:
        return history.check(args.history, verifier)
    if len(args.checkpoint) > 2:
        raise SystemExit("keyledger audit verify: give one --checkpoint, or two to check their consistency")
    old, *newer = [_checkpoint(source, verifier, args.url) for source in args.checkpoint]
    print(f"OK: checkpoint of {old.size} events signed by {verifier.name} ({old.origin})")
    broken = []
    if newer:
        broken += _consistency(old, newer[0], args.url)
    if args.file:
        broken += inclusion.check_export(args.file, old, args.url, _fetch)
    for problem in broken:
        print(f"BROKEN: {problem}")
    return 1 if broken else 0


def _consistency(old: Checkpoint, new: Checkpoint, url: str | None) -> list[str]:
    if old.origin != new.origin:
        return [f"the checkpoints are of two logs ({old.origin}, {new.origin})"]
    if old.size > new.size:
        old, new = new, old
    if old.size == 0:
        print(f"OK: every log extends the empty one (size {new.size})")
        return []
    if not url:
        raise SystemExit(
            "keyledger audit verify: two checkpoints: give --url to fetch their consistency proof"
        )
    query = f"first={old.size}&second={new.size}"
    answer = _fetch(f"{url.rstrip('/')}/api/v1/audit/proof/consistency?{query}", accept_json=True)
    try:
        hashes = inclusion.proof_hashes(answer["hashes"])
    except (KeyError, TypeError, binascii.Error):
        return [f"the service answered no consistency proof: {str(answer)[:200]}"]
    if not merkle.verify_consistency(old.size, new.size, hashes, old.root, new.root):
        return [
            f"the log of {new.size} events does not extend the log of {old.size} the older checkpoint "
            "signs: events before it were changed, removed, inserted or reordered"
        ]
    print(f"OK: the log of {new.size} events extends the log of {old.size} events")
    return []


def register(actions, verify_parser: argparse.ArgumentParser) -> None:
    """`audit verifier-key`, and the checkpoint options of `audit verify`."""
    actions.add_parser("verifier-key", help="print the checkpoints' verifier key").set_defaults(
        run=verifier_key
    )
    verify_parser.add_argument(
        "--key", help="a verifier key (or a file holding one): check signed checkpoints"
    )
    verify_parser.add_argument(
        "--checkpoint",
        action="append",
        default=[],
        help="a signed checkpoint: a file, or `latest` or a tree size fetched from --url; twice: their consistency",
    )
    verify_parser.add_argument(
        "--history",
        help="a saved answer of a key's events with ?proof=true: its checkpoint and every event's inclusion",
    )
    verify_parser.add_argument("--url", help=f"the service to fetch from (credentials: {TOKEN_VARIABLE})")
