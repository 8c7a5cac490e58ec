"""Send keyledger a secret-scanning report signed as GitHub signs one, to test the endpoint by hand.

    python docs/examples/sign_secret_scanning_report.py FOLDER TOKEN [TOKEN ...]

The first run makes a P-256 key pair in FOLDER: `private-key.pem` (stays there: it plays GitHub's
part) and `secret-scanning-keys.json`, shaped like GitHub's `GET /meta/public_keys/secret_scanning`
answer, for KEYLEDGER_SECRET_SCANNING_KEYS. Every run writes FOLDER/report.json (one item per
TOKEN), signs its exact bytes (ECDSA P-256 / SHA-256, base64 DER) and prints the curl command that
sends it. Set KEYLEDGER_URL when keyledger is not at http://127.0.0.1:8080. Needs `cryptography`.
"""

import base64
import json
import os
import shlex
import sys
from pathlib import Path

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

KEY_IDENTIFIER = "keyledger-test-key"
FOUND_AT = "https://github.com/octocat/Hello-World/blob/12345600b9cbe38a219f39a9941c9319b600c002/config.py"


def private_key(folder: Path) -> ec.EllipticCurvePrivateKey:
    """The folder's key pair; made, with the public-key document beside it, when it has none."""
    pem = folder / "private-key.pem"
    if pem.exists():
        return serialization.load_pem_private_key(pem.read_bytes(), password=None)
    key = ec.generate_private_key(ec.SECP256R1())
    folder.mkdir(parents=True, exist_ok=True)
    pem.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    public = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    document = {
        "public_keys": [{"key_identifier": KEY_IDENTIFIER, "key": public.decode(), "is_current": True}]
    }
    (folder / "secret-scanning-keys.json").write_text(json.dumps(document, indent=2) + "\n")
    return key


def main(arguments: list[str]) -> int:
    if len(arguments) < 2:
        print(__doc__.strip(), file=sys.stderr)
        return 2
    folder, tokens = Path(arguments[0]), arguments[1:]
    key = private_key(folder)
    body = json.dumps(
        [
            {"token": token, "type": "keyledger_api_key", "url": FOUND_AT, "source": "content"}
            for token in tokens
        ]
    ).encode()
    (folder / "report.json").write_bytes(body)
    signature = base64.b64encode(key.sign(body, ec.ECDSA(hashes.SHA256()))).decode()
    url = os.environ.get("KEYLEDGER_URL", "http://127.0.0.1:8080") + "/api/v1/secret-scanning/github/"
    print(f"# keyledger must run with KEYLEDGER_SECRET_SCANNING_KEYS={folder / 'secret-scanning-keys.json'}")
    command = [
        "curl", "-sS", "-X", "POST", url,
        "-H", "Content-Type: application/json",
        "-H", f"Github-Public-Key-Identifier: {KEY_IDENTIFIER}",
        "-H", f"Github-Public-Key-Signature: {signature}",
        "--data-binary", f"@{folder / 'report.json'}",
    ]  # fmt: skip
    print(shlex.join(command))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
