"""The generator of the deterministic synthetic image-caption dataset ("Synthetic") of the embedded default run.

Its adapter, which turns the generated folder into a manifest, is :mod:`crossgap.datasets.synthetic`.

Each image shows one simple object on a background.  The attributes are drawn
independently and uniformly:

* ``shape``      - circle, square, triangle, cross, ring         (class attribute)
* ``colour``     - red, green, blue, yellow, purple, orange      (class attribute)
* ``size``       - small, large                                  (nuisance)
* ``position``   - left, right, top, bottom, centre              (nuisance)
* ``background`` - dark, light, striped, checkered               (nuisance)

The class label is ``colour x shape`` (6 x 5 = 30 classes, label =
``colour_index * n_shapes + shape_index``, class name e.g. ``"red circle"``), so
the nuisance attributes make image-image similarity an imperfect proxy for class
identity.  Mild noise is added everywhere: colour jitter, size and position jitter,
a small rotation, and Gaussian pixel noise.

Every caption names the colour and the shape plus a random subset of the
nuisance attributes, phrased through a few prefixes/templates.

Output layout (written atomically: built in a temporary directory, then renamed)::

    <out_root>/synthetic/
      images/{train,test}/<name>.png
      split_zhou_Synthetic.json   {"train": [[rel_path, label, classname], ...], "val": [], "test": [...]}
      captions.json               {rel_path: [caption, ...]}
      classnames.txt              one class name per line, line index = label
      attributes.json             {rel_path: {"shape", "colour", "size", "position", "background"}}

Every image is drawn from its own random stream seeded by ``(seed, split, index)``,
so the same seed gives byte-identical files, and the test split does not depend
on ``num_train``.
"""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

from crossgap.config import schema_default
from tqdm import tqdm

from crossgap.writes import write_failures

log = logging.getLogger(__name__)

DATASET_DIRNAME = "synthetic"
SPLIT_FILENAME = "split_zhou_Synthetic.json"

SHAPES: tuple[str, ...] = ("circle", "square", "triangle", "cross", "ring")
COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (220, 40, 40),
    "green": (40, 170, 60),
    "blue": (40, 80, 220),
    "yellow": (235, 215, 40),
    "purple": (140, 50, 180),
    "orange": (245, 140, 30),
}
SIZES: dict[str, float] = {"small": 0.22, "large": 0.36}  # object radius as a fraction of the side
POSITIONS: dict[str, tuple[float, float]] = {  # object centre (x, y) as fractions of the side
    "left": (0.30, 0.50),
    "right": (0.70, 0.50),
    "top": (0.50, 0.30),
    "bottom": (0.50, 0.70),
    "centre": (0.50, 0.50),
}
BACKGROUNDS: tuple[str, ...] = ("dark", "light", "striped", "checkered")

_POSITION_PHRASES: dict[str, tuple[str, ...]] = {
    "left": ("on the left", "at the left"),
    "right": ("on the right", "at the right"),
    "top": ("at the top", "near the top"),
    "bottom": ("at the bottom", "near the bottom"),
    "centre": ("in the centre", "in the middle"),
}
_BACKGROUND_PHRASES: tuple[str, ...] = ("on a {} background", "against a {} background")
_PREFIXES: tuple[str, ...] = ("a photo of", "an image of", "a picture showing", "there is")
_SUPERSAMPLE = 4
_NOISE_STD = 6.0  # Gaussian pixel noise, in 0..255 units


def class_names() -> list[str]:
    """All class names, index = label (``colour_index * len(SHAPES) + shape_index``)."""
    return [f"{colour} {shape}" for colour in COLOURS for shape in SHAPES]


def class_label(colour: str, shape: str) -> int:
    """The label of the class ``"<colour> <shape>"``."""
    return list(COLOURS).index(colour) * len(SHAPES) + SHAPES.index(shape)


def _rng(seed: int, split: str, index: int) -> np.random.Generator:
    """An independent random stream for image ``index`` of ``split``."""
    split_code = {"train": 0, "test": 1}[split]
    return np.random.default_rng(np.random.SeedSequence([seed, split_code, index]))


def sample_attributes(rng: np.random.Generator) -> dict[str, str]:
    """Draw the five attributes independently and uniformly."""
    return {
        "shape": SHAPES[rng.integers(len(SHAPES))],
        "colour": list(COLOURS)[rng.integers(len(COLOURS))],
        "size": list(SIZES)[rng.integers(len(SIZES))],
        "position": list(POSITIONS)[rng.integers(len(POSITIONS))],
        "background": BACKGROUNDS[rng.integers(len(BACKGROUNDS))],
    }


def _background(kind: str, side: int, rng: np.random.Generator) -> np.ndarray:
    """A grey-level background, ``(side, side, 3)`` float array in 0..255."""
    if kind == "dark":
        img = np.full((side, side), rng.uniform(20, 60))
    elif kind == "light":
        img = np.full((side, side), rng.uniform(190, 235))
    else:
        lo, hi = rng.uniform(60, 100), rng.uniform(150, 190)
        period = int(rng.integers(3, 6)) * _SUPERSAMPLE
        yy, xx = np.mgrid[0:side, 0:side]
        offset = int(rng.integers(period))
        if kind == "striped":
            coord = (yy if rng.random() < 0.5 else xx) + offset
            mask = (coord // period) % 2 == 0
        else:  # checkered
            mask = (((yy + offset) // period) + ((xx + offset) // period)) % 2 == 0
        img = np.where(mask, lo, hi)
    return np.repeat(img[:, :, None], 3, axis=2)


def _polygon(kind: str, cx: float, cy: float, r: float, angle: float) -> list[list[tuple[float, float]]]:
    """Polygons (in pixel coordinates) that make up a square, triangle or cross."""

    def rot(points: list[tuple[float, float]]) -> list[tuple[float, float]]:
        c, s = math.cos(angle), math.sin(angle)
        return [(cx + x * c - y * s, cy + x * s + y * c) for x, y in points]

    if kind == "square":
        h = r * 0.85
        return [rot([(-h, -h), (h, -h), (h, h), (-h, h)])]
    if kind == "triangle":
        return [rot([(r * math.cos(a), r * math.sin(a)) for a in (-math.pi / 2, math.pi / 6, 5 * math.pi / 6)])]
    if kind == "cross":
        t = r * 0.33
        return [rot([(-r, -t), (r, -t), (r, t), (-r, t)]), rot([(-t, -r), (t, -r), (t, r), (-t, r)])]
    raise ValueError(kind)


def render_image(attrs: dict[str, str], image_size: int, rng: np.random.Generator) -> Image.Image:
    """Draw one image with the given attributes; returns an RGB PIL image ``image_size`` square."""
    side = image_size * _SUPERSAMPLE
    canvas = _background(attrs["background"], side, rng)
    base = np.array(COLOURS[attrs["colour"]], dtype=np.float64)
    colour = tuple(int(v) for v in np.clip(base + rng.normal(0.0, 12.0, size=3), 0, 255))
    r = SIZES[attrs["size"]] * side * rng.uniform(0.9, 1.1)
    px, py = POSITIONS[attrs["position"]]
    cx = (px + rng.uniform(-0.05, 0.05)) * side
    cy = (py + rng.uniform(-0.05, 0.05)) * side
    angle = rng.uniform(-0.2, 0.2)

    mask = Image.new("L", (side, side), 0)
    draw = ImageDraw.Draw(mask)
    shape = attrs["shape"]
    if shape in ("circle", "ring"):
        draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=255)
        if shape == "ring":
            ri = r * 0.55
            draw.ellipse([cx - ri, cy - ri, cx + ri, cy + ri], fill=0)
    else:
        for poly in _polygon(shape, cx, cy, r, angle):
            draw.polygon(poly, fill=255)
    alpha = np.asarray(mask, dtype=np.float64)[:, :, None] / 255.0
    canvas = canvas * (1.0 - alpha) + np.asarray(colour, dtype=np.float64) * alpha

    big = Image.fromarray(np.clip(canvas, 0, 255).round().astype(np.uint8), "RGB")
    small = np.asarray(big.resize((image_size, image_size), Image.Resampling.BOX), dtype=np.float64)
    small = small + rng.normal(0.0, _NOISE_STD, size=small.shape)
    return Image.fromarray(np.clip(small, 0, 255).round().astype(np.uint8), "RGB")


def make_captions(attrs: dict[str, str], rng: np.random.Generator, n: int) -> list[str]:
    """``n`` captions naming colour and shape plus a random subset of size/position/background."""
    captions: list[str] = []
    for _ in range(n):
        noun = f"{attrs['colour']} {attrs['shape']}"
        if rng.random() < 0.5:
            noun = f"{attrs['size']} {noun}"
        clauses: list[str] = []
        if rng.random() < 0.5:
            options = _POSITION_PHRASES[attrs["position"]]
            clauses.append(options[rng.integers(len(options))])
        if rng.random() < 0.5:
            clauses.append(_BACKGROUND_PHRASES[rng.integers(len(_BACKGROUND_PHRASES))].format(attrs["background"]))
        if len(clauses) == 2 and rng.random() < 0.5:
            clauses.reverse()
        prefix = _PREFIXES[rng.integers(len(_PREFIXES))]
        article = "an" if noun[0] in "aeiou" else "a"
        captions.append(" ".join([prefix, article, noun, *clauses]) + ".")
    return captions


def _write_json(path: Path, obj: Any) -> None:
    path.write_text(json.dumps(obj, indent=1, sort_keys=True) + "\n")


def generate_synthetic(
    out_root: str | os.PathLike,
    *,
    num_train: int,
    num_test: int,
    image_size: int = schema_default("synthetic.image_size"),
    captions_per_image: int = schema_default("synthetic.captions_per_image"),
    seed: int = schema_default("synthetic.seed"),
    overwrite: bool = True,
) -> Path:
    """Generate the Synthetic dataset under ``<out_root>/synthetic`` and return that directory.

    The tree is built in a temporary sibling directory and renamed into place, so a
    crash never leaves a partial dataset under the final name; a failed write (a full disk)
    raises :class:`crossgap.writes.WriteError` naming the dataset folder.  With ``overwrite``
    an existing ``synthetic`` directory is replaced; otherwise it raises
    :class:`FileExistsError`.
    """
    if num_train < 0 or num_test < 0 or captions_per_image < 1 or image_size < 8:
        raise ValueError("need num_train/num_test >= 0, captions_per_image >= 1, image_size >= 8")
    out_root = Path(out_root)
    final = out_root / DATASET_DIRNAME
    if final.exists() and not overwrite:
        raise FileExistsError(final)
    out_root.mkdir(parents=True, exist_ok=True)
    with write_failures(final):
        tmp = Path(tempfile.mkdtemp(prefix=f".{DATASET_DIRNAME}.", suffix=".tmp", dir=out_root))
        os.chmod(tmp, 0o755)  # mkdtemp makes it private
    with write_failures(final, tmp, cleanup=lambda: shutil.rmtree(tmp, ignore_errors=True)):
        names = class_names()
        split: dict[str, list[list[Any]]] = {"train": [], "val": [], "test": []}
        captions: dict[str, list[str]] = {}
        attributes: dict[str, dict[str, str]] = {}
        for split_name, count in (("train", num_train), ("test", num_test)):
            (tmp / "images" / split_name).mkdir(parents=True)
            width = max(6, len(str(max(count - 1, 0))))
            for i in tqdm(range(count), desc=f"synthetic {split_name}", unit="img", leave=False):
                rng = _rng(seed, split_name, i)
                attrs = sample_attributes(rng)
                image = render_image(attrs, image_size, rng)
                rel = f"{split_name}/{i:0{width}d}.png"
                image.save(tmp / "images" / rel, format="PNG", optimize=False)
                label = class_label(attrs["colour"], attrs["shape"])
                split[split_name].append([rel, label, names[label]])
                captions[rel] = make_captions(attrs, rng, captions_per_image)
                attributes[rel] = attrs
        _write_json(tmp / SPLIT_FILENAME, split)
        _write_json(tmp / "captions.json", captions)
        _write_json(tmp / "attributes.json", attributes)
        (tmp / "classnames.txt").write_text("\n".join(names) + "\n")
        if final.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{DATASET_DIRNAME}.old.", dir=out_root))
            os.replace(final, old / DATASET_DIRNAME)
            os.replace(tmp, final)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, final)
    log.info("wrote %d train / %d test images (%d classes) to %s", num_train, num_test, len(names), final)
    return final
