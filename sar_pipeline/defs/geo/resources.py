"""The optical image source co-located with SAR tiles."""

import dagster as dg
from pydantic import Field

from sar_pipeline import paths
from sar_pipeline.geo.optical import OpticalSource, open_optical_source


class OpticalResource(dg.ConfigurableResource):
    """Where optical images come from: one GDAL-readable mosaic, or a STAC catalogue of optical items."""

    kind: str = Field(
        default="mosaic",
        description="'mosaic' (one GeoTIFF/COG/VRT, local, s3:// or /vsis3/) or 'stac' (a catalogue of items).",
    )
    uri: str = Field(
        default_factory=lambda: str(paths.demo_archive_dir() / "optical" / "orthophoto.tif"),
        description="The mosaic raster, or the STAC catalog.json/collection.json of optical items.",
    )
    bands: list[int] | None = Field(
        default=None,
        description="1-based red, green, blue band indices (default: colour-tagged bands, else 1,2,3).",
    )
    value_min: float | None = Field(default=None, description="Source value mapped to 0 (default 0).")
    value_max: float | None = Field(
        default=None, description="Source value mapped to 255 (default 255; e.g. 3000 for Sentinel-2 L2A)."
    )
    resampling: str = Field(default="bilinear", description="GDAL resampling used to warp optical pixels.")
    asset_key: str | None = Field(
        default=None, description="STAC only: the RGB asset key (default visual/rgb/image/data)."
    )
    max_cloud_cover: float | None = Field(
        default=None, description="STAC only: ignore items above this eo:cloud_cover (%)."
    )

    def get_source(self) -> OpticalSource:
        options = {"bands": self.bands, "resampling": self.resampling}
        if self.value_min is not None or self.value_max is not None:
            options["value_range"] = (
                self.value_min or 0.0,
                self.value_max if self.value_max is not None else 255.0,
            )
        if self.kind == "stac":
            options.update(asset_key=self.asset_key, max_cloud_cover=self.max_cloud_cover)
        return open_optical_source(self.kind, self.uri, **options)


@dg.definitions
def defs() -> dg.Definitions:
    return dg.Definitions(resources={"optical": OpticalResource()})
