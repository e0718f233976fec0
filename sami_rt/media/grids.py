"""Image grids a person can read (``sami-rt generate``, ``interpolate``, ``traverse``): tiles enlarged by an
integer zoom (nearest neighbour), a caption under each tile, a title above them, a marked tile (generate's
guide) framed in colour. Cells after the last tile are left as background: no filler tiles. Always RGB,
drawn with OpenCV's Hershey font (no further dependency). ``sami_rt.media.images.grid`` stays the plain mosaic
that training's sample grids use."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from sami_rt.media.images import load_cv2

BACKGROUND = (40, 46, 58)  # RGB: the gaps, the captions, the title and the unused cells of the last row
TEXT = (236, 236, 236)
MARK = (255, 160, 0)  # the frame around a marked tile: a colour no grey model's tile holds
MIN_TILE = 96  # auto zoom: the smallest integer making a tile at least this many pixels on its longer side
MAX_ZOOM = 32
PAD = 6  # pixels between tiles and around the grid
FRAME = 3  # a marked tile's frame: the FRAME (< PAD) pixels of the gap next to the tile on every side
SCALES = (0.5, 0.45, 0.4, 0.35, 0.3)  # caption font scales, tried largest first
TITLE_SCALE = 0.5


def auto_zoom(h: int, w: int) -> int:
    """The default zoom: the smallest integer that brings an h x w tile to at least MIN_TILE pixels (3 for
    the shipped 32-px models), 1 for tiles that large already."""
    return max(1, min(MAX_ZOOM, -(-MIN_TILE // max(h, w, 1))))


@dataclass(frozen=True)
class Layout:
    """Where things go: ``n`` tiles of ``tile`` (h, w) pixels in ``ncol`` columns and as many rows as they
    fill, each with a caption strip ``caption_h`` high under it, below a title ``title_h`` high. With
    ``lead``, tile 0 (generate's guide, traverse's image) stands alone in a column of its own on the left
    of the first row, and the other tiles fill ``ncol`` columns beside it: 16 samples fill two rows of 8."""

    n: int
    ncol: int
    tile: tuple[int, int]
    caption_h: int = 0
    title_h: int = 0
    pad: int = PAD
    lead: bool = False

    @property
    def nrow(self) -> int:
        return max(1, -(-(self.n - self.lead) // self.ncol))

    @property
    def shape(self) -> tuple[int, int]:
        h, w = self.tile
        return (self.title_h + self.nrow * (h + self.caption_h + self.pad) + self.pad,
                (self.ncol + self.lead) * (w + self.pad) + self.pad)

    def box(self, i: int) -> tuple[int, int]:
        """(top, left) of tile i."""
        r, c = (0, 0) if self.lead and i == 0 else divmod(i - self.lead, self.ncol)
        c += self.lead and i > 0
        h, w = self.tile
        return self.title_h + self.pad + r * (h + self.caption_h + self.pad), self.pad + c * (w + self.pad)


def layout(n: int, tile: tuple[int, int], ncol: int = 8, caption_h: int = 0, title_h: int = 0,
           lead: bool = False) -> Layout:
    """The layout of n tiles in at most ncol columns (fewer when n is smaller), the first in a column of its
    own with ``lead``."""
    rest = n - bool(lead)
    return Layout(n, max(1, min(int(ncol), rest)), (int(tile[0]), int(tile[1])), caption_h, title_h, lead=bool(lead))


def zoom_tiles(images: np.ndarray, zoom: int) -> np.ndarray:
    """uint8 [N, H, W, C] -> [N, zoom H, zoom W, C], each pixel repeated (nearest neighbour)."""
    if zoom == 1:
        return images
    return np.repeat(np.repeat(images, zoom, axis=1), zoom, axis=2)


def rgb(images: np.ndarray) -> np.ndarray:
    """uint8 [N, H, W, 1 | 3] -> [N, H, W, 3] (grey repeated), so that marks and text can be coloured."""
    return np.repeat(images, 3, axis=3) if images.shape[3] == 1 else images


# The largest side each writable format takes (WebP's limit is in its bitstream, JPEG's in its header); a
# grid larger than the format allows is refused before any sampling (``check_grid``), not after it.
MAX_SIDE = {".webp": 16383, ".jpg": 65500, ".jpeg": 65500}
MAX_PIXELS = 400_000_000  # any format: about 1.2 GB of RGB, far beyond a picture a person looks at


@dataclass(frozen=True)
class _Plan:
    scale: float
    labels: list
    lines: list
    lay: Layout


def _plan(cv2, n: int, tile: tuple[int, int], ncol: int, labels, title, lead: bool = False) -> _Plan:
    """The caption scale, the captions and title lines as drawn, and the layout of n zoomed tiles."""
    h, w = tile
    labels = [str(s) for s in labels] if labels is not None else []
    if labels and len(labels) != n:
        raise ValueError(f"{len(labels)} labels for {n} tiles")
    scale, labels = _fit(cv2, labels, w - 4) if any(labels) else (0.0, [])
    caption_h = _line_height(cv2, scale) + 2 if labels else 0
    width = layout(n, (h, w), ncol, lead=lead).shape[1]
    lines = _wrap(cv2, title, width - 2 * PAD) if title else []
    title_h = len(lines) * _line_height(cv2, TITLE_SCALE) + (PAD if lines else 0)
    return _Plan(scale, labels, lines, layout(n, (h, w), ncol, caption_h, title_h, lead))


def grid_shape(n: int, tile: tuple[int, int], ncol: int = 8, zoom: int = 1, labels=None,
               title: str | None = None, lead: bool = False) -> tuple[int, int]:
    """(height, width) of the picture ``labelled_grid`` draws for n tiles of ``tile`` pixels, without drawing."""
    return _plan(load_cv2(), n, (tile[0] * int(zoom), tile[1] * int(zoom)), ncol, labels, title, lead).lay.shape


def check_grid(path, shape: tuple[int, int]) -> None:
    """ValueError, one sentence, where a picture of ``shape`` cannot be written as ``path``'s format."""
    h, w = shape
    ext = Path(path).suffix.lower()
    limit = MAX_SIDE.get(ext)
    if limit is not None and max(h, w) > limit:
        raise ValueError(f"the grid would be {w} x {h} pixels, beyond {ext[1:].upper()}'s {limit} per side; "
                         f"ask for fewer images or a smaller --zoom, or write .png")
    if h * w > MAX_PIXELS:
        raise ValueError(f"the grid would be {w} x {h} pixels ({h * w / 1e6:.0f} million); ask for fewer images "
                         f"or a smaller --zoom")


def labelled_grid(images: np.ndarray, ncol: int = 8, zoom: int = 1, labels=None, marked=(),
                  title: str | None = None, lead: bool = False) -> np.ndarray:
    """uint8 [N, H, W, C] -> one uint8 RGB picture [rows, cols, 3]: the tiles zoomed, ``labels`` (one per
    tile; "" for none) under them, ``title`` above (wrapped to the grid's width), the tiles whose indices
    are in ``marked`` framed in MARK, with ``lead`` tile 0 in a column of its own (``Layout``). Without
    labels there is no caption strip, without a title no title."""
    cv2 = load_cv2()
    tiles = rgb(zoom_tiles(np.asarray(images, dtype=np.uint8), int(zoom)))
    n, h, w, _ = tiles.shape
    plan = _plan(cv2, n, (h, w), ncol, labels, title, lead)
    scale, labels, lay = plan.scale, plan.labels, plan.lay
    caption_h = lay.caption_h
    out = np.empty((*lay.shape, 3), dtype=np.uint8)
    out[:] = BACKGROUND
    y = PAD
    for line in plan.lines:
        y += _line_height(cv2, TITLE_SCALE)
        _text(cv2, out, line, PAD, y - _baseline(cv2, TITLE_SCALE) - 2, TITLE_SCALE)
    for i in range(n):
        top, left = lay.box(i)
        if i in marked:  # the frame: a MARK rectangle FRAME pixels larger on every side, under the tile
            out[top - FRAME : top + h + FRAME, left - FRAME : left + w + FRAME] = MARK
        out[top : top + h, left : left + w] = tiles[i]
        if labels and labels[i]:
            tw = cv2.getTextSize(labels[i], cv2.FONT_HERSHEY_SIMPLEX, scale, 1)[0][0]
            _text(cv2, out, labels[i], left + (w - tw) // 2, top + h + caption_h - _baseline(cv2, scale) - 2, scale)
    return out


def _text(cv2, img, text, x, y, scale):
    cv2.putText(img, text, (int(x), int(y)), cv2.FONT_HERSHEY_SIMPLEX, scale, TEXT, 1, cv2.LINE_AA)


def _line_height(cv2, scale) -> int:
    (_, th), base = cv2.getTextSize("Ag", cv2.FONT_HERSHEY_SIMPLEX, scale, 1)
    return th + base + 4


def _baseline(cv2, scale) -> int:
    return cv2.getTextSize("Ag", cv2.FONT_HERSHEY_SIMPLEX, scale, 1)[1]


def _width(cv2, text, scale) -> int:
    return cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, 1)[0][0]


def _fit(cv2, labels: list[str], width: int) -> tuple[float, list[str]]:
    """The largest of SCALES at which every label fits ``width`` pixels; at the smallest, labels still too
    wide are cut and end in '..'."""
    for s in SCALES:
        if all(_width(cv2, t, s) <= width for t in labels):
            return s, labels
    s = SCALES[-1]
    out = []
    for t in labels:
        while len(t) > 2 and _width(cv2, t, s) > width:
            t = t.removesuffix("..")[:-1] + ".."
        out.append(t)
    return s, out


def _wrap(cv2, text: str, width: int) -> list[str]:
    """Words to lines of at most ``width`` pixels at TITLE_SCALE (a word wider than that on a line of its own,
    cut where it must be)."""
    lines: list[str] = []
    for word in text.split():
        if lines and _width(cv2, lines[-1] + " " + word, TITLE_SCALE) <= width:
            lines[-1] += " " + word
            continue
        while len(word) > 1 and _width(cv2, word, TITLE_SCALE) > width:  # an overlong word: cut it
            k = len(word) - 1
            while k > 1 and _width(cv2, word[:k], TITLE_SCALE) > width:
                k -= 1
            lines.append(word[:k])
            word = word[k:]
        lines.append(word)
    return lines
