"""Conditioning pictures: land cover in the palette, sketches of tiles, the palette check, the classifier."""

import io

import numpy as np
import pytest
from PIL import Image

from sar_pipeline.archive.landcover import FIELD, FOREST, NODATA, URBAN, WATER
from sar_pipeline.generation.adherence import agreement, patch_labels, train_classifier
from sar_pipeline.generation.conditioning import (
    EDGE,
    PALETTE,
    ConditioningError,
    conditioning_image,
    landcover_to_rgb,
    legend_png,
    sketch_classes,
    sketch_from_tile,
)
from sar_pipeline_tests.generation.world import landcover, tile_images


def test_landcover_round_trips_through_the_palette():
    codes = np.array([[WATER, FIELD], [FOREST, URBAN]], np.uint8)
    assert np.array_equal(sketch_classes(landcover_to_rgb(codes)), codes)


def test_sketch_of_a_tile_is_in_the_palette_with_outlines_and_nodata():
    grey = np.full((128, 128), 60, np.uint8)
    grey[:, 64:] = 200  # a dark and a bright half
    grey[:, :8] = 0  # nodata strip
    rgb = sketch_from_tile(grey)
    classes = sketch_classes(rgb)  # raises if any colour is outside the palette
    assert (classes[:, :8] == NODATA).all()
    assert (classes[:, 60:68] == EDGE).any()  # the boundary between the halves is outlined
    dark, bright = classes[64, 30], classes[64, 100]
    order = [WATER, FIELD, FOREST, URBAN]
    assert order.index(dark) < order.index(bright)


def test_conditioning_prefers_land_cover_and_falls_back_to_a_sketch():
    grey = np.random.default_rng(0).integers(1, 255, (64, 64)).astype(np.uint8)
    codes = np.full((64, 64), FOREST, np.uint8)
    assert (conditioning_image(codes, grey) == PALETTE[FOREST][1]).all()
    assert not (conditioning_image(np.zeros((64, 64), np.uint8), grey) == PALETTE[FOREST][1]).all()


def test_colours_outside_the_palette_are_listed_or_snapped():
    rgb = landcover_to_rgb(np.full((8, 8), WATER, np.uint8))
    rgb[0, 0] = (31, 91, 199)  # anti-aliased water
    with pytest.raises(
        ConditioningError, match=r"1 colour\(s\) outside the sketch palette: #1f5bc7 \(1 px\)"
    ):
        sketch_classes(rgb, "s.png")
    assert (sketch_classes(rgb, snap=True) == WATER).all()


def test_legend_names_every_class():
    legend = Image.open(io.BytesIO(legend_png()))
    assert legend.height >= 24 * len(PALETTE)


def test_classifier_recognises_land_cover_in_real_tiles_and_not_in_noise():
    rng = np.random.default_rng(1)
    tiles = [landcover(rng, 64) for _ in range(30)]
    greys = [tile_images(c, rng)[0].astype(np.float32) / 255 for c in tiles]
    classifier = train_classifier(greys[:24], tiles[:24])
    scores = [agreement(classifier, g, c) for g, c in zip(greys[24:], tiles[24:], strict=True)]
    hits, total = sum(h for h, _ in scores), sum(n for _, n in scores)
    assert total > 0 and hits / total > 0.8
    noise = rng.uniform(0, 1, (64, 64)).astype(np.float32)
    labels = patch_labels(tiles[24])
    hits_noise, n = agreement(classifier, noise, tiles[24])
    assert n == (labels >= 0).sum() and hits_noise / n < hits / total
