"""`keyledger audit verify --key K --checkpoint C FILE`: are an export's events in the signed tree?

Every line's own hash must match its content (events/chain.py, with the line's own prev_hash: the
event before a line of a filtered export is not in the file, so each line is checked alone). Then:

- An export of the log's first N events (N the checkpoint's size; `leaf_index` 0, 1, 2, … from the
  first line, or null, or absent as in exports made before it existed) is checked offline: the RFC
  9162 root of its first N lines must be the signed one.
- Any other export (filtered, or made before the checkpoint) is checked line by line with the
  inclusion proof `--url` serves for the line's `leaf_index` in the checkpoint's tree. The index only
  says where to look; the proof against the signed root decides, so a changed line, a forged one
  whose hash was recomputed, or one with a wrong `leaf_index` fails. Lines no proof can cover
  (`leaf_index` null, or N and above: newer than the checkpoint) are counted, not broken.

The file is read line by line (twice when proofs are fetched), so memory stays flat.
"""

import base64
import binascii
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import msgspec

from events import chain, merkle
from events.note import Checkpoint

PROGRESS_EVERY = 1000  # lines between progress lines on stderr while proofs are fetched
MOST_REPORTED = 100  # broken lines named one by one; the rest are counted
_NOTHING_KEPT = 64  # a frontier level no tree reaches: the prefix's root needs no completed subtrees


@dataclass
class Line:
    position: int
    chain_hash: bytes | None  # None: an event from before the chain (migration 004), leaf SHA-256(0x00)
    leaf_index: int | None  # -1 when the line's leaf_index is no leaf index (then problem says so)
    problem: str | None  # why the line is broken on its own
    names_leaf: bool = True  # False for a line written before exports carried leaf_index
    prev_hash: bytes | None = None


@dataclass
class Findings:
    broken: list[str] = field(default_factory=list)
    more_broken: int = 0

    def add(self, problem: str) -> None:
        if len(self.broken) < MOST_REPORTED:
            self.broken.append(problem)
        else:
            self.more_broken += 1

    def problems(self) -> list[str]:
        more = [f"… and {self.more_broken} more lines like these"] if self.more_broken else []
        return self.broken + more


def _records(file: str) -> Iterator[tuple[int, dict]]:
    try:
        with open(file, "rb") as lines:
            for number, line in enumerate(lines, start=1):
                if line.strip():
                    yield number, msgspec.json.decode(line)
    except (OSError, msgspec.DecodeError) as error:
        raise SystemExit(f"keyledger audit verify: cannot read the export {file}: {error}") from None


def _line(file: str, number: int, record: dict) -> Line:
    try:
        position, text = record["position"], record["hash"]
        chain_hash = None if text is None else bytes.fromhex(text)
        prev_hash = None if text is None else bytes.fromhex(record["prev_hash"])
        broken = chain.ChainChecker().check(record) if chain_hash is not None else None
    except (KeyError, TypeError, ValueError, AttributeError) as error:
        raise SystemExit(
            f"keyledger audit verify: line {number} of {file} is not an export record "
            f"({type(error).__name__}: {error}); write it with keyledger export or GET /api/v1/audit/events"
        ) from None
    leaf = record.get("leaf_index")
    if leaf is not None and (type(leaf) is not int or leaf < 0):
        return Line(position, chain_hash, -1, f"position {position}: leaf_index {leaf!r} is no leaf index")
    problem = broken.problem if broken else None
    return Line(position, chain_hash, leaf, problem, "leaf_index" in record, prev_hash)


def _lines(file: str) -> Iterator[Line]:
    for number, record in _records(file):
        yield _line(file, number, record)


def proof_hashes(texts: list[str]) -> list[bytes]:
    """A proof's hashes as the service answers them (base64); binascii.Error if one is not."""
    return [base64.b64decode(text, validate=True) for text in texts]


def _leaf(line: Line) -> bytes:
    return merkle.leaf_hash(line.chain_hash or b"")


@dataclass
class Scan:
    lines: int = 0
    prefix_root: bytes | None = None  # the root of the first N lines, when they are the log's first N
    unnamed: int = 0  # lines without a leaf_index field (written before exports carried it)


def _scan(file: str, size: int, findings: Findings) -> Scan:
    """Check every line's own hash; the root of the first `size` lines if they claim to be leaves
    0, 1, 2, … (or null: not in the tree when exported). Lines of an export made before leaf_index
    claim nothing: they count as the log's first only while each links to the one before it."""
    scan, frontier, prefix, last_hash = Scan(), merkle.Frontier(), True, chain.GENESIS
    for line in _lines(file):
        scan.lines += 1
        scan.unnamed += not line.names_leaf
        if line.problem:
            findings.add(line.problem)
        if prefix and frontier.size < size:
            linked = line.chain_hash is None or line.prev_hash == last_hash
            prefix = line.leaf_index in (None, frontier.size) and (line.names_leaf or linked)
            last_hash = line.chain_hash or last_hash
            frontier.append(_leaf(line), _NOTHING_KEPT, [])
    if prefix and frontier.size == size:
        scan.prefix_root = frontier.root()
    return scan


def check_export(file: str, signed: Checkpoint, url: str | None, fetch: Callable) -> list[str]:
    """Print what holds; return what is broken (empty when everything holds)."""
    findings, size = Findings(), signed.size
    scan = _scan(file, size, findings)
    if scan.prefix_root is not None:
        if scan.prefix_root != signed.root:
            findings.add(f"the export's first {size} events are not the ones the checkpoint signs")
        else:
            print(f"OK: the export's first {size} events are the checkpoint's tree")
        if scan.lines > size:
            print(f"OK: {scan.lines - size} later events are newer than the checkpoint: not covered")
        return findings.problems()
    if scan.lines and scan.unnamed == scan.lines:
        raise SystemExit(
            f"keyledger audit verify: {file} names no event's leaf_index (it was written before exports "
            f"did) and is not the log's first {size} events, linked by their hashes: a filtered export, "
            "or one whose chain `keyledger audit verify FILE` finds broken. Export it again with keyledger "
            "export (or GET /api/v1/audit/events), and its events are checked with their inclusion proofs"
        )
    if not url:
        raise SystemExit(
            f"keyledger audit verify: {file} is not the log's first {size} events (a filtered export, "
            "or one made before the checkpoint): give --url of the service to check each event with its "
            "inclusion proof (credentials in KEYLEDGER_AUDIT_TOKEN)"
        )
    _prove(file, signed, scan.lines, url.rstrip("/"), fetch, findings)
    return findings.problems()


def _prove(file: str, signed: Checkpoint, total: int, url: str, fetch: Callable, findings: Findings):
    proven = uncovered = unchained = 0
    for seen, line in enumerate(_lines(file), start=1):
        if seen % PROGRESS_EVERY == 0:
            print(f"keyledger audit verify: {seen} of {total} lines checked", file=sys.stderr, flush=True)
        if line.problem:
            continue  # reported by the scan
        if line.leaf_index is None or line.leaf_index >= signed.size:
            uncovered += 1
        elif problem := _inclusion_problem(line, signed, url, fetch):
            findings.add(problem)
        else:
            proven += 1
            unchained += line.chain_hash is None
    print(
        f"OK: {proven} of the export's {total} events are in the checkpoint's tree of {signed.size} (proven)"
    )
    if uncovered:
        print(
            f"OK: {uncovered} events are not covered by the checkpoint of {signed.size} (newer than it, "
            "or not yet in the tree): check them against a later checkpoint"
        )
    if unchained:
        print(
            f"OK: {unchained} of them carry no hash (recorded before the hash chain existed): their place "
            "in the log is proven, their content cannot be"
        )


def _inclusion_problem(line: Line, signed: Checkpoint, url: str, fetch: Callable) -> str | None:
    index, size = line.leaf_index, signed.size
    answer = fetch(
        f"{url}/api/v1/audit/proof/inclusion?leaf_index={index}&tree_size={size}", accept_json=True
    )
    try:
        hashes = proof_hashes(answer["hashes"])
    except (KeyError, TypeError, binascii.Error):
        return f"position {line.position}: the service answered no inclusion proof: {str(answer)[:200]}"
    if merkle.verify_inclusion(_leaf(line), index, size, hashes, signed.root):
        return None
    return (
        f"position {line.position}: is not leaf {index} of the checkpoint's tree of {size} events (its "
        "inclusion proof fails: the event was changed or forged, or its leaf_index is wrong)"
    )
