"""Resources of the captioning stage: which captioner writes the tile captions, and how BLIP training runs."""

import os

import dagster as dg

from sar_pipeline.captioning import Captioner, CaptionerSettings, make_captioner
from sar_pipeline.captioning.captioner import CAPTIONER_MODEL_VARIABLE


class CaptionerResource(dg.ConfigurableResource, CaptionerSettings):
    """The captioner of the ``captions`` asset: ``template`` (land cover, the demo default) or ``blip``."""

    def get_captioner(self) -> Captioner:
        return make_captioner(self)


def captioner_from_environment() -> dict[str, object]:
    """BLIP with ``model_path`` = ``dg.EnvVar($SAR_PIPELINE_CAPTIONER_MODEL)`` when the deployment sets
    that variable (then ``captions`` also takes a ``gpu`` pool slot), else nothing: the template captioner."""
    if os.environ.get(CAPTIONER_MODEL_VARIABLE):
        return {"kind": "blip", "model_path": dg.EnvVar(CAPTIONER_MODEL_VARIABLE)}
    return {}


@dg.definitions
def defs() -> dg.Definitions:
    # blip_trainer is swappable: a PipesK8sClient / PipesDockerClient runs the same child module in a GPU pod.
    return dg.Definitions(
        resources={
            "captioner": CaptionerResource(**captioner_from_environment()),
            "blip_trainer": dg.PipesSubprocessClient(),
        }
    )
