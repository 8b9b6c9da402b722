"""Check that every FROM of the given Dockerfiles names its image by digest (``@sha256:<64 hex>``).

A FROM that names an earlier build stage (``FROM build``) needs no digest; ``FROM ${ARG}`` is
checked with the ARG's default (a build may override it, e.g. CI with a locally made base). Exit status 1, with
the offending lines, when an image is pinned by tag only.
    python scripts/check-dockerfile-pins.py Dockerfile [more Dockerfiles]
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

FROM = re.compile(r"^\s*FROM\s+(?:--\S+\s+)*(?P<image>\S+)(?:\s+AS\s+(?P<stage>\S+))?\s*$", re.IGNORECASE)
DIGEST = re.compile(r"@sha256:[0-9a-f]{64}$")
ARG = re.compile(r"^\s*ARG\s+(?P<name>\w+)(?:=(?P<default>\S*))?\s*$", re.IGNORECASE)
VARIABLE = re.compile(r"\$\{?(\w+)\}?")


def unpinned(text: str) -> list[tuple[int, str]]:
    """(line number, line) of every FROM whose image is neither digest-pinned nor an earlier stage."""
    stages: set[str] = set()
    defaults: dict[str, str] = {}
    bad = []
    lines = text.replace("\\\n", " ").splitlines()
    for number, line in enumerate(lines, start=1):
        arg = ARG.match(line)
        if arg:
            defaults[arg["name"]] = (arg["default"] or "").strip("\"'")
            continue
        match = FROM.match(line)
        if not match:
            continue
        image = VARIABLE.sub(lambda m: defaults.get(m[1], m[0]), match["image"])
        if image.lower() not in stages and not DIGEST.search(image):
            bad.append((number, line.strip()))
        if match["stage"]:
            stages.add(match["stage"].lower())
    return bad


def main(paths: list[str]) -> int:
    status = 0
    for path in paths or ["Dockerfile"]:
        text = Path(path).read_text()
        if not any(FROM.match(line) for line in text.splitlines()):
            print(f"{path}: no FROM line", file=sys.stderr)
            status = 1
        for number, line in unpinned(text):
            print(f"{path}:{number}: image not pinned by digest (@sha256:...): {line}", file=sys.stderr)
            status = 1
    if status == 0:
        print(f"every FROM is pinned by digest: {', '.join(paths or ['Dockerfile'])}")
    return status


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
