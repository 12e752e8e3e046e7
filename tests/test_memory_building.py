"""Building the visual bank with bounded memory: the rows it keeps are chosen from the CAM scores before any image is
encoded, and must be exactly the rows of the plain rule (all candidates ranked by score, ties by source id, capped
per observation)."""

from __future__ import annotations

import random

import pytest

from amrg.memory.banks import select_visual_rows
from amrg.memory.mining import Region


def _plain_rule(regions, image_size, grid, patch_size, cap):
    """The definition, written out: every distinct cell of every region is a candidate; sort; cap."""
    patch_grid = image_size // patch_size
    candidates = {}
    for index, region in enumerate(regions):
        seen = set()
        for patch, score in zip(region.patches, region.scores):
            row, col = divmod(patch, patch_grid)
            cell = int((row + 0.5) * patch_size * grid // image_size) * grid + int(
                (col + 0.5) * patch_size * grid // image_size)
            if cell in seen:
                continue
            seen.add(cell)
            source = f"{region.study_id}#{region.observation}#cell{cell}"
            candidates.setdefault(region.observation_index, []).append((score, source, index, cell))
    return {key: [(s, src, r, c) for s, src, r, c in sorted(items, key=lambda x: (-x[0], x[1]))[:cap]]
            for key, items in candidates.items()}


@pytest.mark.parametrize("cap", [0, 1, 3, 50])
def test_bounded_selection_equals_the_plain_rule(cap):
    rng = random.Random(cap)
    regions = []
    for i in range(300):
        observation = rng.randrange(4)
        patches = rng.sample(range(256), rng.randint(1, 6))
        # Few distinct scores, so that ties (broken by source id) are common; ids of different lengths, so that
        # prefixes ("s1" / "s10") meet.
        scores = [rng.choice([0.5, 0.75, 0.9, 1.0]) for _ in patches]
        regions.append(Region(f"s{rng.randrange(60)}", f"obs{observation}", observation, patches, scores))
    chosen = select_visual_rows(regions, image_size=64, grid=8, patch_size=4, max_rows_per_disease=cap)
    expected = _plain_rule(regions, 64, 8, 4, cap)
    assert set(chosen) == set(expected)
    for key in expected:
        got = [(c.score, c.source, c.region, c.cell) for c in chosen[key]]
        assert got == expected[key]
