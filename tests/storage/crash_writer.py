"""A writer process for the crash test: writes self-checking values as fast as it can and prints
``<revision> <key> <seq>`` after each write the store confirmed, until it is killed."""

from __future__ import annotations

import asyncio
import hashlib
import json
import sys
from pathlib import Path

from podvisor.storage import KeyNotFoundError, SQLiteStorage


def make_value(key: str, seq: int) -> bytes:
    pad = "x" * (70_000 if seq % 7 == 0 else 300)  # some values span many pages
    body = {"key": key, "seq": seq, "pad": pad}
    digest = hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()
    return json.dumps({**body, "sha": digest}, sort_keys=True).encode()


def check_value(raw: bytes) -> dict[str, object]:
    doc = json.loads(raw)
    sha = doc.pop("sha")
    assert hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest() == sha, "torn value"
    return doc


async def main(path: Path, writers: int) -> None:
    store = await SQLiteStorage.open(path, keep_revisions=None)
    out = sys.stdout

    async def writer(w: int) -> None:
        seq = 0
        key = f"/registry/core/configmaps/crash/w{w}"
        while True:
            seq += 1
            value = make_value(key, seq)
            try:
                cur = await store.get(key)
                kv = await store.update(key, value, expected_revision=cur.mod_revision)
            except KeyNotFoundError:
                kv = await store.create(key, value)
            out.write(f"{kv.mod_revision} {key} {seq}\n")
            out.flush()

    await asyncio.gather(*(writer(w) for w in range(writers)))


if __name__ == "__main__":
    asyncio.run(main(Path(sys.argv[1]), int(sys.argv[2])))
