"""Build a KDEF-style photo tree from real face photos that ship with scikit-image and matplotlib.

Renamed copies, mirrored, rotated by +-10 degrees, scaled and padded to KDEF's 562x762, plus
the defects of circulating copies: a corrupt file, a black image, a photo with no face,
a misnamed file, an image of another size, an AKDEF average and a full profile.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

KDEF_W, KDEF_H = 562, 762


def real_faces() -> dict[str, np.ndarray]:
    import matplotlib.cbook as cbook
    import skimage.data

    with Image.open(cbook.get_sample_data("grace_hopper.jpg")) as im:
        hopper = np.asarray(im.convert("RGB"))
    return {"astronaut": skimage.data.astronaut(), "hopper": hopper}


def on_canvas(img: Image.Image, scale: float = 1.0, size: tuple[int, int] = (KDEF_W, KDEF_H)) -> Image.Image:
    """Scale, then pad (or crop) to the KDEF frame, centred, like a standardised studio photo."""
    w, h = img.size
    img = img.resize((int(w * scale), int(h * scale)), Image.BILINEAR)
    canvas = Image.new("RGB", size, (128, 128, 128))
    canvas.paste(img, ((size[0] - img.width) // 2, (size[1] - img.height) // 3))
    return canvas


def variants(photo: np.ndarray) -> dict[str, Image.Image]:
    base = Image.fromarray(photo)
    return {
        "plain": on_canvas(base),
        "mirrored": on_canvas(base.transpose(Image.FLIP_LEFT_RIGHT)),
        "rot+10": on_canvas(base.rotate(10, resample=Image.BILINEAR, fillcolor=(128, 128, 128))),
        "rot-10": on_canvas(base.rotate(-10, resample=Image.BILINEAR, fillcolor=(128, 128, 128))),
        "scaled": on_canvas(base, scale=0.8),
    }


#: file stem -> (photo, variant); names cover sessions, genders, people, expressions and angles
GOOD = {
    "AF01ANS": ("astronaut", "plain"),
    "BF01HAS": ("astronaut", "mirrored"),
    "AF01SUHL": ("astronaut", "rot+10"),
    "AF01NEHR": ("astronaut", "rot-10"),
    "BF01DIS": ("astronaut", "scaled"),
    "AF02AFS": ("hopper", "plain"),
    "BF02SAS": ("hopper", "mirrored"),
    "AF02HAHL": ("hopper", "rot+10"),
    "BF02ANHR": ("hopper", "rot-10"),
    "AF02SUS": ("hopper", "scaled"),
}


def build_few(root: Path, count: int = 2) -> list[str]:
    """Only ``count`` good photos under root/KDEF: enough for a run that must start its workers, quick to write."""
    faces = real_faces()
    stems = list(GOOD)[:count]
    for stem in stems:
        photo, variant = GOOD[stem]
        folder = root / "KDEF" / stem[:4]
        folder.mkdir(parents=True, exist_ok=True)
        variants(faces[photo])[variant].save(folder / f"{stem}.JPG", quality=92)
    return stems


def build(root: Path) -> dict[str, object]:
    """Write the tree under root/KDEF_and_AKDEF; return what a test needs to know about it."""
    faces = real_faces()
    kdef = root / "KDEF_and_AKDEF" / "KDEF"
    made = {}
    for stem, (photo, variant) in GOOD.items():
        folder = kdef / stem[:4]
        folder.mkdir(parents=True, exist_ok=True)
        variants(faces[photo])[variant].save(folder / f"{stem}.JPG", quality=92)
        made[stem] = (photo, variant)
    odd = kdef / "AM03"
    odd.mkdir(parents=True)
    on_canvas(Image.fromarray(faces["astronaut"]), size=(633, 970)).save(odd / "AM03ANS.JPG")  # another size
    (odd / "AM03HAS.JPG").write_bytes(b"\xff\xd8\xff\xe0 this is not a jpeg at all" * 20)  # corrupt
    Image.new("RGB", (KDEF_W, KDEF_H), (0, 0, 0)).save(odd / "AM03SAS.JPG")  # solid black
    import skimage.data

    on_canvas(Image.fromarray(skimage.data.brick()).convert("RGB")).save(odd / "AM03NES.JPG")  # no face
    on_canvas(Image.fromarray(faces["hopper"])).save(odd / "AM3XXS.JPG")  # misnamed
    on_canvas(Image.fromarray(faces["hopper"])).save(odd / "AM03DIFL.JPG")  # full profile: excluded by default
    akdef = root / "KDEF_and_AKDEF" / "AKDEF"
    akdef.mkdir(parents=True)
    on_canvas(Image.fromarray(faces["hopper"])).save(akdef / "AFAN.JPG")  # averaged face: ignored
    return {
        "good": made,
        "corrupt": "AM03HAS",
        "black": "AM03SAS",
        "no_face": "AM03NES",
        "misnamed": "AM3XXS",
        "odd_size": "AM03ANS",
        "profile": "AM03DIFL",
    }
