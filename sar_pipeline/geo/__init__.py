"""Geometry: the sar_scenes table, footprints, fixed-GSD resampling in native SAR orientation, tiling,
optical co-location, and the per-flight stages' settings (:mod:`sar_pipeline.geo.settings`)."""
