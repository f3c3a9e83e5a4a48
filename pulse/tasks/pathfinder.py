"""Generated Pathfinder (Linsley et al., 2018), the LRA's Pathfinder-32 and Path-X (Tay et al.,
2020): are the two dots the two ends of one dashed curve? Read as a row-major sequence of
resolution² grey pixels (vocabulary 256), 2 classes.

An image (0 background, 255 ink) holds distractors + 2 contours and two dots, discs of radius
1.5·s px (s = resolution / 32: a higher resolution draws the same picture on a finer grid, as
Path-X does). A contour is a chain of `contour_length` straight paddles, each 4·s px long and
turning by a uniform angle of at most `max_turn` degrees from the one before, never coming back
within one paddle of itself; only the middle half of each paddle is inked, so the curve is
dashed and must be followed across its gaps.

Positive (label 1, odd indices): the dots sit on the two ends of one contour; the other
distractors + 1 contours touch no dot. Negative (label 0, even indices), the LRA way: each dot
sits on one end of its own contour, plus `distractors` others. No cue but the path: every image
draws as many contours, all equally long; a negative's dots sit at the two ends of a 'phantom'
contour drawn like a positive's (and not inked), and its two contours leave them in the
phantom's directions, so dot distance and the curve's heading at each dot are distributed
alike for both labels (up to which pictures fit). Contours keep a clear pixel (s px) from each
other and from the dots, so the label is exactly whether the solid (undashed) contour pixels
connect the dots — the tests check it by flood fill.

What fits (the same at every resolution): contour_length 6 with 2 distractors, the default
(1.2 tries and about 2 ms an image at 32 px on one CPU core), or with 3 (2.4 tries, 5 ms);
5 with 4; 4 with 6; 7 with 2; 8 with 1. Settings that need more than 8 tries an image over the
first 16 images are refused when the task is built, saying what to lower.

Each image comes from its own (seed, split, index) random stream: candidate walks are drawn
32 at a time as arrays, placed where they fit inside the image, and the first clear of
everything drawn is kept; an image that cannot be completed is begun again from the same stream.

# k candidate walks · l paddles · n points per paddle
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import numpy as np

from pulse.errors import PulseError
from pulse.specs.tasks import PathfinderSpec
from pulse.tasks.base import rng_for
from pulse.tasks.image import PixelClassification

INK = 255
PADDLE = 4.0  # paddle length in pixels at resolution 32
INKED = 0.5  # inked middle share of each paddle
DOT_RADIUS = 1.5  # at resolution 32
CANDIDATES = 32  # walks drawn at once
TRIES = 8  # candidate batches per contour before the image is begun again
RESTARTS = 1000  # images begun again before the settings are declared impossible
CROWDED = 8.0  # mean tries per image, over the first images, above which the settings are refused


@dataclass(frozen=True)
class PathfinderImage:
    """One example: the pixels, each contour's solid (undashed) pixels, the dot centres, the label."""

    pixels: np.ndarray  # (r, r) uint8
    contours: list[np.ndarray]  # each (m, 2) int: (row, column) of every pixel on the undashed curve
    dots: np.ndarray  # (2, 2) int: (row, column) of each dot's centre, a contour's end pixel
    label: int


class _Geometry:
    """Sizes at one setting, in pixels."""

    def __init__(self, resolution: int, contour_length: int, max_turn: float):
        s = resolution / 32
        self.side, self.paddles = resolution, contour_length
        self.paddle = PADDLE * s
        self.turn = math.radians(max_turn)
        n = math.ceil(self.paddle / 0.5)  # ≤ 0.5 px apart: the rounded points are 8-connected
        self.inked_t = np.linspace((1 - INKED) / 2, (1 + INKED) / 2, math.ceil(INKED * self.paddle / 0.5) + 1)
        self.solid_t = np.union1d(np.arange(n) / n, self.inked_t)  # every inked pixel is a solid one
        radius = DOT_RADIUS * s
        reach = math.floor(radius)
        dy, dx = np.mgrid[-reach : reach + 1, -reach : reach + 1]
        self.disc = np.stack([dy, dx], -1)[dy**2 + dx**2 <= radius**2]  # (p, 2) offsets
        self.border = reach  # a contour stays this far inside, so a dot on its end fits
        self.dots_apart = 5 * s  # least distance between the two dots
        m = max(1, round(s))  # clear pixels kept around everything drawn
        dy, dx = np.mgrid[-m : m + 1, -m : m + 1]
        self.halo = np.stack([dy.ravel(), dx.ravel()], -1)
        self.far = np.triu(np.ones((contour_length + 1,) * 2, dtype=bool), 2)  # vertex pairs ≥ 2 apart


@functools.lru_cache(maxsize=8)
def _geometry(resolution: int, contour_length: int, max_turn: float) -> _Geometry:
    return _Geometry(resolution, contour_length, max_turn)


def _walks(rng: np.random.Generator, g: _Geometry, start: np.ndarray | None,
           heading: float | None) -> tuple[np.ndarray, np.ndarray]:
    """CANDIDATES contours from `start` (2,), or each placed uniformly where it fits inside the border, first
    heading `heading` (radians) or random: vertices (k, l+1, 2) and solid pixels (k, l·n+1, 2)."""
    heading = np.full((CANDIDATES, 1), heading) if heading is not None else rng.uniform(0, 2 * np.pi, (CANDIDATES, 1))
    turns = rng.uniform(-g.turn, g.turn, (CANDIDATES, g.paddles - 1))
    angles = heading + np.concatenate([np.zeros_like(heading), np.cumsum(turns, 1)], 1)  # (k, l)
    steps = g.paddle * np.stack([np.sin(angles), np.cos(angles)], -1)  # (k, l, 2) as (row, column)
    shape = np.concatenate([np.zeros((CANDIDATES, 1, 2)), np.cumsum(steps, 1)], 1)  # (k, l+1, 2) from the start
    if start is None:
        lo = g.border - shape.min(1)  # (k, 2); where hi < lo the walk fits nowhere and fails the border check
        hi = g.side - 1 - g.border - shape.max(1)
        start = lo + rng.random((CANDIDATES, 2)) * (hi - lo)
    vertices = np.reshape(start, (-1, 1, 2)) + shape
    points = vertices[:, :-1, None] + g.solid_t[None, None, :, None] * steps[:, :, None]  # (k, l, n, 2)
    points = np.concatenate([points.reshape(CANDIDATES, -1, 2), vertices[:, -1:]], 1)
    return vertices, np.rint(points).astype(np.int64)


def _fit(rng: np.random.Generator, g: _Geometry, start: np.ndarray | None, blocked: np.ndarray,
         heading: float | None = None, ends_apart: bool = False) -> tuple[np.ndarray, np.ndarray] | None:
    """The first candidate walk inside the border, clear of `blocked` pixels and of itself, its ends
    ≥ dots_apart apart if asked: (vertices (l+1, 2), solid pixels (m, 2)), or None."""
    for _ in range(TRIES):
        vertices, pixels = _walks(rng, g, start, heading)
        ok = ((pixels >= g.border) & (pixels <= g.side - 1 - g.border)).all((1, 2))
        inside = np.clip(pixels, 0, g.side - 1)
        ok &= ~blocked[inside[..., 0], inside[..., 1]].any(1)
        gaps = np.square(vertices[:, :, None] - vertices[:, None]).sum(-1)  # (k, l+1, l+1) squared distances
        ok &= (gaps[:, g.far] >= (g.paddle * 0.999) ** 2).all(1)
        if ends_apart:
            ok &= gaps[:, 0, -1] >= g.dots_apart**2
        if ok.any():
            first = int(np.argmax(ok))
            return vertices[first], pixels[first]
    return None


def _block(blocked: np.ndarray, pixels: np.ndarray, g: _Geometry) -> None:
    """Mark `pixels` and their halo as taken."""
    around = np.clip((pixels[:, None] + g.halo[None]).reshape(-1, 2), 0, g.side - 1)
    blocked[around[:, 0], around[:, 1]] = True


def _attempt(rng: np.random.Generator, g: _Geometry, label: int, distractors: int) -> PathfinderImage | None:
    """One try at an image; None when a contour found no room."""
    blocked = np.zeros((g.side, g.side), dtype=bool)
    first = _fit(rng, g, None, blocked, ends_apart=True)  # a positive's curve, a negative's phantom
    if first is None:
        return None
    ends = first[0][[0, -1]]
    away = first[0][[1, -2]] - ends  # the first step out of each end
    headings = np.arctan2(away[:, 0], away[:, 1])
    dots = np.rint(ends).astype(np.int64)
    discs = [dot + g.disc for dot in dots]
    if label:
        contours = [first]
        _block(blocked, np.concatenate([first[1], *discs]), g)
    else:  # each dot on the end of its own contour; the first keeps clear of the second dot
        contours = []
        reserved = blocked.copy()
        _block(reserved, discs[1], g)
        for end, heading, disc, clear in zip(ends, headings, discs, (reserved, blocked)):
            walk = _fit(rng, g, end, clear, heading)
            if walk is None:
                return None
            contours.append(walk)
            _block(blocked, np.concatenate([walk[1], disc]), g)
    while len(contours) < distractors + 2:
        walk = _fit(rng, g, None, blocked)
        if walk is None:
            return None
        contours.append(walk)
        _block(blocked, walk[1], g)
    image = np.zeros((g.side, g.side), dtype=np.uint8)
    for vertices, _ in contours:
        steps = np.diff(vertices, axis=0)  # (l, 2)
        dashes = np.rint(vertices[:-1, None] + g.inked_t[None, :, None] * steps[:, None]).reshape(-1, 2)
        dashes = dashes.astype(np.int64)
        image[dashes[:, 0], dashes[:, 1]] = INK
    spots = np.concatenate(discs)
    image[spots[:, 0], spots[:, 1]] = INK
    return PathfinderImage(image, [pixels for _, pixels in contours], dots, label)


def _draw(spec: PathfinderSpec, split: str, index: int, restarts: int = RESTARTS) -> tuple[PathfinderImage | None, int]:
    """Image `index` of a split (None if `restarts` tries were not enough) and the tries it took."""
    g = _geometry(spec.resolution, spec.contour_length, spec.max_turn)
    rng = rng_for(spec.seed, split, index)
    for tries in range(1, restarts + 1):
        made = _attempt(rng, g, index % 2, spec.distractors)
        if made is not None:
            return made, tries
    return None, restarts


def _crowded(spec: PathfinderSpec, why: str) -> PulseError:
    return PulseError(
        f"pathfinder: {spec.distractors} + 2 contours of contour_length {spec.contour_length} hardly fit one image "
        f"({why}); lower task.contour_length or task.distractors (at any resolution, 6 with 2 or 5 with 3 fit)."
    )


def pathfinder_image(spec: PathfinderSpec, split: str, index: int) -> PathfinderImage:
    """Image `index` of a split, from its own random stream; its label is the index's parity."""
    made, _ = _draw(spec, split, index)
    if made is None:
        raise _crowded(spec, f"no image in {RESTARTS} tries")
    return made


class Pathfinder(PixelClassification):
    """Pathfinder classification (are the dots connected?); accuracy."""

    kind = "pathfinder"
    num_classes = 2

    def __init__(self, spec: PathfinderSpec):
        super().__init__(spec)
        probe = min(16, spec.num_train)  # settings too crowded to draw fail here, not mid-run
        budget = int(CROWDED * probe)
        for index in range(probe):
            made, tries = _draw(spec, "train", index, budget)
            budget -= tries
            if made is None or budget < 0:
                raise _crowded(spec, f"more than {CROWDED:.0f} tries an image")

    def size(self, split: str) -> int:
        return self.spec.num_train if split == "train" else self.spec.num_test

    def image(self, split: str, index: int) -> PathfinderImage:
        """Example `index` of a split as an image, to look at (`.pixels`, r × r uint8)."""
        return pathfinder_image(self.spec, split, index)

    def encoded(self, split: str, index: int) -> tuple[np.ndarray, int]:
        made = self.image(split, index)
        return made.pixels.reshape(-1).astype(np.int64), made.label
