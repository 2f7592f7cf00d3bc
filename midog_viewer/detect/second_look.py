"""A second look: score each mitotic-figure candidate again on a window centred on it.

Why: a CNN with strided layers scores an object by where it falls on its stride grid. A model trained on
crop mosaics saw nearly every figure at one place on that grid (a crop's centre), and scores a figure that
falls elsewhere much lower: the shipped real-tissue model finds 0.88 of the AMi-Br/MIDOG21 validation
mitoses at 0.75 where the mosaics put them, 0.59-0.67 one or three px off (``benchmarks/real_model.py``
scores both). A field puts figures anywhere. Cutting a window whose centre lies on the grid around each
candidate and keeping the better of the two scores makes the score no longer depend on where the tiles
happened to fall.

The detector cuts the windows from the tile read again with a margin of half a window (stain-normalised and
at the model's pixel spacing, as the tile was), so a candidate near a tile's edge is seen with the tissue
around it; only tiles holding a candidate are read again. Past the slide's edge a window is white, the colour
of empty glass. A second look costs one small forward pass per candidate.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

#: A window's own detection counts as the candidate when its centre lies this close to the window's centre
#: (model px: 3 µm at 0.25 µm/px, well inside a figure's 12.5 µm box).
CENTRE_TOLERANCE_PX = 12.0
#: What a window holds past the image's edge: empty glass, white on the 0..255 scale the model reads.
WHITE = 255.0
#: Windows per forward pass.
WINDOW_BATCH = 32


@dataclass(frozen=True)
class SecondLook:
    """Which candidates are looked at again, and on what window.

    ``side``: the window's side in model px; a multiple of the model's padding divisor, so that its centre
    falls on the stride grid. ``floor``: candidates scoring below it keep their score (and cost nothing).
    ``class_index``: the class looked at (the mitotic figure).
    """

    side: int
    floor: float
    class_index: int = 0


def centred_windows(image: torch.Tensor, centres: torch.Tensor, side: int) -> torch.Tensor:
    """(N, 3, side, side) windows of a (3, H, W) image, each with a centre of ``centres`` (N, 2; x, y) at
    pixel (side // 2, side // 2), rounded to whole pixels; what lies outside the image is white."""
    if len(centres) == 0:
        return image.new_zeros((0, 3, side, side))
    padded = torch.nn.functional.pad(image, (side, side, side, side), value=WHITE)
    corners = torch.round(centres).long() - side // 2 + side  # top-left corner in the padded image
    height, width = padded.shape[-2:]
    corners[:, 0] = corners[:, 0].clamp(0, width - side)
    corners[:, 1] = corners[:, 1].clamp(0, height - side)
    return torch.stack([padded[:, y : y + side, x : x + side] for x, y in corners.tolist()])


def box_centres(boxes: torch.Tensor) -> torch.Tensor:
    """(N, 2) x, y centres of (N, 4) xyxy boxes."""
    return torch.stack([(boxes[:, 0] + boxes[:, 2]) / 2, (boxes[:, 1] + boxes[:, 3]) / 2], dim=1)


def candidates(output: dict[str, torch.Tensor], look: SecondLook) -> torch.Tensor:
    """Indices of the detections in ``output`` that get a second look."""
    return torch.nonzero((output["labels"] == look.class_index) & (output["scores"] >= look.floor)).flatten()


def second_look_scores(
    model: torch.nn.Module,
    image: torch.Tensor,
    output: dict[str, torch.Tensor],
    look: SecondLook,
    offset: tuple[float, float] = (0.0, 0.0),
) -> torch.Tensor:
    """The scores of ``output`` (the model's detections on a tile) after a second look.

    ``image`` is the tile, or the tile with a margin around it whose top-left corner lies ``offset`` (x, y)
    model px above and left of the tile's. Each detection of ``look.class_index`` scoring ≥ ``look.floor`` is
    scored again on a window centred on it: its new score is the higher of its own and that of the window's best
    detection of the same class centred within :data:`CENTRE_TOLERANCE_PX` of the window's centre. Boxes and
    labels are unchanged; no score drops.
    """
    scores = output["scores"].float().clone()
    picked = candidates(output, look)
    if len(picked) == 0:
        return scores
    centres = box_centres(output["boxes"].float()[picked]) + torch.tensor(offset, device=scores.device)
    windows = centred_windows(image, centres, look.side)
    half = look.side // 2
    for start in range(0, len(picked), WINDOW_BATCH):
        outputs = model(list(windows[start : start + WINDOW_BATCH]))
        for index, out in zip(picked[start : start + WINDOW_BATCH].tolist(), outputs):
            offsets = box_centres(out["boxes"].float()) - half
            near = (out["labels"] == look.class_index) & (offsets.norm(dim=1) <= CENTRE_TOLERANCE_PX)
            if near.any():
                scores[index] = torch.maximum(scores[index], out["scores"].float()[near].max())
    return scores
