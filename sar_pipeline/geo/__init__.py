"""Geometry: footprints, fixed-GSD resampling in native SAR orientation, tiling, optical co-location."""
