"""The optical image source co-located with SAR tiles."""

import dagster as dg

from sar_pipeline.geo.optical import OpticalSource, open_optical_source
from sar_pipeline.geo.settings import OpticalSettings


class OpticalResource(dg.ConfigurableResource, OpticalSettings):
    """Where optical images come from: one GDAL-readable mosaic, or a STAC catalogue of optical items."""

    def get_source(self) -> OpticalSource:
        return open_optical_source(self)


@dg.definitions
def defs() -> dg.Definitions:
    return dg.Definitions(resources={"optical": OpticalResource()})
