"""The sources co-located with SAR tiles: optical images and land cover."""

import contextlib
from collections.abc import Iterator

import dagster as dg

from sar_pipeline.geo.landcover import LandCoverSettings, LandCoverSource, open_landcover_source
from sar_pipeline.geo.optical import OpticalSource, open_optical_source
from sar_pipeline.geo.settings import OpticalSettings


class OpticalResource(dg.ConfigurableResource, OpticalSettings):
    """Where optical images come from: one GDAL-readable mosaic, or a STAC catalogue of optical items."""

    def get_source(self) -> OpticalSource:
        return open_optical_source(self)


class LandCoverResource(dg.ConfigurableResource, LandCoverSettings):
    """Where land cover comes from: the scenes' own land-cover assets, or one categorical raster + classes."""

    @contextlib.contextmanager
    def get_source(self) -> Iterator[LandCoverSource | None]:
        source = open_landcover_source(self)
        try:
            yield source
        finally:
            if source is not None:
                source.close()


@dg.definitions
def defs() -> dg.Definitions:
    return dg.Definitions(resources={"optical": OpticalResource(), "landcover": LandCoverResource()})
