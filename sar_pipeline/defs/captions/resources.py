"""Resources of the captioning stage: which captioner writes the tile captions, and how BLIP training runs."""

import dagster as dg
from pydantic import Field

from sar_pipeline.captioning import DEFAULT_ACTIVATION_TOKEN, Captioner, make_captioner


class CaptionerResource(dg.ConfigurableResource):
    """The captioner of the ``captions`` asset: ``template`` (land cover, the demo default) or ``blip``."""

    kind: str = Field(
        default="template", description="'template' (from land cover/labels) or 'blip' (optical tile)."
    )
    model_path: str = Field(
        default="",
        description="Local BLIP checkpoint folder (base, large or our fine-tune); for kind='blip'.",
    )
    device: str = Field(default="auto", description="'auto' (GPU if present), 'cpu', 'cuda', 'cuda:1', …")
    dtype: str = Field(
        default="auto",
        description="BLIP weights dtype: auto (bf16/fp16 on GPU, fp32 on CPU), float32, float16, bfloat16.",
    )
    batch_size: int = Field(default=32, description="Tiles per BLIP forward pass.")
    num_beams: int = Field(default=3, description="Beam width of BLIP decoding; 1 = greedy.")
    max_new_tokens: int = Field(default=40, description="Longest BLIP caption in tokens.")
    activation_token: str = Field(
        default=DEFAULT_ACTIVATION_TOKEN, description="Prefix of every text (paper §4.1)."
    )
    include_acquisition: bool = Field(
        default=False, description="Append band, polarisation, incidence angle and GSD in words to each text."
    )
    min_optical_coverage: float = Field(
        default=0.5,
        description="BLIP only: skip tiles whose optical image covers less than this share of the tile.",
    )

    def get_captioner(self) -> Captioner:
        if self.kind == "blip":
            return make_captioner(
                "blip",
                self.model_path,
                device=self.device,
                dtype=self.dtype,
                batch_size=self.batch_size,
                num_beams=self.num_beams,
                max_new_tokens=self.max_new_tokens,
            )
        return make_captioner(self.kind)


@dg.definitions
def defs() -> dg.Definitions:
    # blip_trainer is swappable: a PipesK8sClient / PipesDockerClient runs the same child module in a GPU pod.
    return dg.Definitions(
        resources={"captioner": CaptionerResource(), "blip_trainer": dg.PipesSubprocessClient()}
    )
