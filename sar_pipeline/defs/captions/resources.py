"""Resources of the captioning stage: which captioner writes the tile captions, and how BLIP training runs."""

import dagster as dg

from sar_pipeline.captioning import Captioner, CaptionerSettings, make_captioner


class CaptionerResource(dg.ConfigurableResource, CaptionerSettings):
    """The captioner of the ``captions`` asset: ``template`` (land cover, the demo default) or ``blip``."""

    def get_captioner(self) -> Captioner:
        return make_captioner(self)


@dg.definitions
def defs() -> dg.Definitions:
    # blip_trainer is swappable: a PipesK8sClient / PipesDockerClient runs the same child module in a GPU pod.
    return dg.Definitions(
        resources={"captioner": CaptionerResource(), "blip_trainer": dg.PipesSubprocessClient()}
    )
