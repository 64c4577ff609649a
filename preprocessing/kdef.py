"""KDEF file names: ``AF01ANS.JPG`` = session A, female, person 01, afraid, straight.

Parsed with a case-insensitive regular expression, never by position (stems are 7
characters for the straight angle and 8 for the others).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

EXPRESSIONS = {
    "AF": "afraid",
    "AN": "angry",
    "DI": "disgusted",
    "HA": "happy",
    "NE": "neutral",
    "SA": "sad",
    "SU": "surprised",
}
ANGLES = ("S", "HL", "HR", "FL", "FR")
DEFAULT_ANGLES = ("S", "HL", "HR")  # full profiles show one eye

_NAME = re.compile(
    r"^(?P<session>[AB])(?P<gender>[FM])(?P<person>\d{2})(?P<expr>AF|AN|DI|HA|NE|SA|SU)(?P<angle>S|HL|HR|FL|FR)$",
    re.IGNORECASE,
)


@dataclass(frozen=True)
class KdefName:
    session: str  # "A" or "B"
    gender: str  # "F" or "M"
    person: str  # "01".."35"
    expression: str  # two-letter code
    angle: str  # S, HL, HR, FL, FR

    @property
    def label(self) -> str:
        return EXPRESSIONS[self.expression]

    @property
    def subject(self) -> str:
        """Gender + number: AF01 and BF01 are the same person, so splits by person never leak."""
        return f"{self.gender}{self.person}"


def parse_name(path: str | Path) -> KdefName | None:
    """The parsed name, or None if the stem does not follow the KDEF pattern."""
    m = _NAME.match(Path(path).stem)
    if m is None:
        return None
    return KdefName(m["session"].upper(), m["gender"].upper(), m["person"], m["expr"].upper(), m["angle"].upper())


def is_image(path: Path) -> bool:
    return path.suffix.lower() in (".jpg", ".jpeg")  # KDEF ships upper-case .JPG


def find_photos(root: Path, include_akdef: bool = False) -> list[Path]:
    """Every JPEG under ``root`` (any case), walking recursively; AKDEF averages skipped unless asked."""
    found = []
    for p in sorted(root.rglob("*")):
        if not p.is_file() or not is_image(p):
            continue
        if not include_akdef and any(part.upper().startswith("AKDEF") for part in p.relative_to(root).parts[:-1]):
            continue
        found.append(p)
    return found
