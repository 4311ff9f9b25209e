"""sar-pipeline: airborne SAR archives → captioned dataset → fine-tuned Stable Diffusion."""

__version__ = "0.1.0"
