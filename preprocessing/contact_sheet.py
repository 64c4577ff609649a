"""A grid of random crops with their labels, for a person to check at a glance."""

from __future__ import annotations

import io
import random
from pathlib import Path

from splitfed.files import atomic_write_bytes


def contact_sheet(
    root: Path, rows: list[dict[str, str]], out: Path, n: int = 48, columns: int = 6, seed: int = 0
) -> None:
    from PIL import Image, ImageDraw

    picks = random.Random(seed).sample(rows, min(n, len(rows)))
    tiles = [(Image.open(root / r["path"]).convert("RGB"), f"{r['label']} {r.get('angle', '')}".strip()) for r in picks]
    tw, th = tiles[0][0].size
    label_h = 14
    rows_n = (len(tiles) + columns - 1) // columns
    sheet = Image.new("RGB", (columns * (tw + 4), rows_n * (th + label_h + 4)), "white")
    draw = ImageDraw.Draw(sheet)
    for i, (tile, text) in enumerate(tiles):
        x, y = (i % columns) * (tw + 4), (i // columns) * (th + label_h + 4)
        sheet.paste(tile.resize((tw, th)), (x + 2, y + 2))
        draw.text((x + 3, y + th + 3), text, fill="black")
    buf = io.BytesIO()
    sheet.save(buf, format="PNG")
    atomic_write_bytes(out, buf.getvalue())
