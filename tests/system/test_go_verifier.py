"""Our checkpoints and proofs, checked by Go's golang.org/x/mod/sumdb (note and tlog): code we did not
write, which Go's checksum database runs on. Needs Go and the x/mod sources (Debian: golang-go,
golang-golang-x-mod-dev; .ci/run installs them); skips without them."""

import base64
import hashlib
import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from events import merkle
from events.note import Checkpoint, Signer

GOPATH = Path("/usr/share/gocode")
SOURCE = Path(__file__).parent / "go_verifier" / "main.go"

pytestmark = pytest.mark.skipif(
    not shutil.which("go") or not (GOPATH / "src/golang.org/x/mod/sumdb/tlog").is_dir(),
    reason="needs Go with golang.org/x/mod (apt-get install golang-go golang-golang-x-mod-dev)",
)


@pytest.fixture(scope="module")
def go_verifier(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("go")
    binary = folder / "verifier"
    env = {**os.environ, "GO111MODULE": "off", "GOPATH": str(GOPATH), "GOCACHE": str(folder / "cache")}
    subprocess.run(["go", "build", "-o", str(binary), str(SOURCE)], check=True, env=env, timeout=300)
    return binary


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def tree_case(size: int) -> dict:
    chain = [hashlib.sha256(b"event %d" % i).digest() for i in range(size)]
    leaves = [merkle.leaf_hash(h) for h in chain]

    def proof(ranges):
        return [b64(h) for h in merkle.assemble(ranges, subtree_hashes(leaves, merkle.subtrees_of(ranges)))]

    sizes = sorted(n for n in {1, 2, 3, 7, 8, 9, size // 2, size - 1, size} if 1 <= n <= size)
    signer = Signer.generate("keyledger.test")
    text = Checkpoint("keyledger.test/log", size, merkle.root(leaves)).text()
    return {
        "verifier": signer.verifier.text(),
        "signer": signer.secret_text(),
        "text": text,
        "signed": signer.sign(text),
        "chain_hashes": [h.hex() for h in chain],
        "roots": {str(n): b64(merkle.root(leaves[:n])) for n in sizes},
        "inclusion": [
            {"index": i, "size": n, "leaf_hash": b64(leaves[i]), "hashes": proof(merkle.inclusion_plan(i, n))}
            for n in sizes
            for i in sorted({0, n // 3, n // 2, n - 1})
        ],
        "consistency": [
            {"first": m, "second": n, "hashes": proof(merkle.consistency_plan(m, n))}
            for n in sizes
            for m in sorted({1, n // 2 or 1, n - 1 or 1, n})
        ],
    }


def subtree_hashes(leaves, wanted):
    return {
        (level, index): merkle.root(leaves[index << level : (index + 1) << level]) for level, index in wanted
    }


def run(binary: Path, case: dict) -> subprocess.CompletedProcess:
    return subprocess.run([str(binary)], input=json.dumps(case), capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize("size", [1, 2, 5, 64, 1000, 4097])
def test_go_agrees_with_our_roots_proofs_and_signed_checkpoints(go_verifier, size):
    result = run(go_verifier, tree_case(size))
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout == "ok\n"


def test_go_refuses_what_does_not_hold(go_verifier):
    case = tree_case(100)
    good = json.dumps(case)
    broken = json.loads(good)
    broken["inclusion"][5]["hashes"][0] = b64(bytes(32))
    broken["consistency"][3]["hashes"][-1] = b64(bytes(32))
    broken["signed"] = broken["signed"].replace("\n100\n", "\n101\n")
    result = run(go_verifier, broken)
    assert result.returncode == 1
    assert "inclusion of" in result.stdout
    assert "consistency of" in result.stdout
    assert "signed note" in result.stdout
