"""The K = rows x cols grid of crops that realization compares (METHOD.md)."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:  # only for the annotations: the report draws grids without loading torch
    import torch

GRID = (4, 4)


def grid_bounds(height: int, width: int, grid: tuple[int, int] = GRID) -> list[tuple[int, int, int, int]]:
    """(top, bottom, left, right) of each crop, row-major. Each crop is floor(size / n)
    pixels; the last row and column take the remainder.

    >>> grid_bounds(10, 9, (2, 2))
    [(0, 5, 0, 4), (0, 5, 4, 9), (5, 10, 0, 4), (5, 10, 4, 9)]
    """
    rows, cols = grid
    if height < rows or width < cols:
        raise ValueError(f"a {height}x{width} image is too small for a {rows}x{cols} grid")
    row_size, col_size = height // rows, width // cols
    bounds = []
    for r in range(rows):
        top, bottom = r * row_size, (height if r == rows - 1 else (r + 1) * row_size)
        for c in range(cols):
            left, right = c * col_size, (width if c == cols - 1 else (c + 1) * col_size)
            bounds.append((top, bottom, left, right))
    return bounds


def grid_crops(image: torch.Tensor, grid: tuple[int, int] = GRID) -> list[torch.Tensor]:
    """Views (no copies) of the crops of a (C, H, W) tensor, row-major."""
    _, height, width = image.shape
    return [image[:, t:b, l:r] for t, b, l, r in grid_bounds(height, width, grid)]
