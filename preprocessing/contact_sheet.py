"""A grid of random crops, each labelled with its source file and class, for a person to check at a glance
(and to trace a bad crop back to its photo)."""

from __future__ import annotations

import io
import random
from pathlib import Path

from splitfed.files import atomic_write_bytes


def tile_label(row: dict[str, str]) -> list[str]:
    """The two lines under a crop: the name of its source photo, then its class (and angle)."""
    source = Path(row.get("source") or row["path"]).name
    return [source, f"{row['label']} {row.get('angle', '')}".strip()]


def contact_sheet(
    root: Path, rows: list[dict[str, str]], out: Path, n: int = 48, columns: int = 6, seed: int = 0
) -> None:
    from PIL import Image, ImageDraw

    picks = random.Random(seed).sample(rows, min(n, len(rows)))
    tiles = [(Image.open(root / r["path"]).convert("RGB"), "\n".join(tile_label(r))) for r in picks]
    w0, th = tiles[0][0].size
    tw = max(w0, 84)  # room for a KDEF file name (AF01ANHL.JPG) under a narrow crop
    label_h = 26
    rows_n = (len(tiles) + columns - 1) // columns
    sheet = Image.new("RGB", (columns * (tw + 4), rows_n * (th + label_h + 4)), "white")
    draw = ImageDraw.Draw(sheet)
    for i, (tile, text) in enumerate(tiles):
        x, y = (i % columns) * (tw + 4), (i // columns) * (th + label_h + 4)
        sheet.paste(tile.resize((w0, th)), (x + 2 + (tw - w0) // 2, y + 2))
        draw.text((x + 3, y + th + 3), text, fill="black")
    buf = io.BytesIO()
    sheet.save(buf, format="PNG")
    atomic_write_bytes(out, buf.getvalue())
