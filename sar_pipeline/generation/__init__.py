"""Generation: text → SAR, img2img, refining simulated SAR, sketch → SAR (ControlNet), provenance, the web page.

``settings`` (the options of one generation), ``model`` (loading a fine-tuned model and its
sampler), ``sample`` (the denoising loop), ``output`` (single-band PNG with provenance, GeoTIFF,
reading inputs), ``refine`` (refine-simulated), ``adherence`` (does an output follow its sketch),
``webui`` (the local Gradio page), ``controlnet`` (its training). No Dagster here: the commands
(``sar_pipeline.cli_generation``) and ``sar_pipeline.lineage`` ask the instance.
"""
