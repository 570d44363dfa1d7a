"""sha256 of a file, streamed: shared by the oracle scripts (stdlib only,
so scripts that run without the oracle venv can import it)."""
import hashlib


def sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()
