"""The local generation web page (``sar-pipeline serve``): Gradio, bound to 127.0.0.1 by default.

Tabs: text → SAR, img2img, sketch → SAR (a canvas whose brushes are the land-cover palette, the
legend beside it; the canvas anti-aliases its brush edges, so colours are snapped to the nearest
palette colour), and refine-simulated's strength sweep (speckle and structure against strength,
on the dataset's own simulated and real tiles). Each output shows its provenance, the same record
its PNG carries. Nothing leaves the machine: Gradio's analytics are off, no share link, and the
page uses system fonts (no font CDN).
"""

from __future__ import annotations

import io
import json
import os
from pathlib import Path

import numpy as np

from sar_pipeline.generation.settings import GenerationSettings


def _provenance_text(model, item, mode: str, params, input_name: str | None = None) -> str:
    from sar_pipeline.generation.output import provenance_of

    record = provenance_of(model, item, mode, params, input_name)
    return json.dumps(record.model_dump(exclude_none=True), indent=1)


def _u8(grey: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(grey * 255), 0, 255).astype(np.uint8)


def build_app(model_folder: str | Path, controlnet_folder: str | Path | None = None):
    """The Gradio Blocks app for the model at ``model_folder`` (and the ControlNet, when given)."""
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    import gradio as gr

    from sar_pipeline.errors import SarPipelineError
    from sar_pipeline.generation.conditioning import (
        FIELD,
        PALETTE,
        classes_to_rgb,
        legend_png,
        palette_hex,
        resize_classes,
        sketch_classes,
    )
    from sar_pipeline.generation.model import load_controlnet, load_generation_model
    from sar_pipeline.generation.output import dataset_radiometry
    from sar_pipeline.generation.sample import generate

    model = load_generation_model(model_folder)
    if controlnet_folder:
        load_controlnet(model, controlnet_folder)
    controlnet = model.controlnet
    model.controlnet = None
    params = (
        dataset_radiometry(model.storage_root, model.dataset_version)
        if model.storage_root and model.dataset_version
        else None
    )
    size = model.resolution
    defaults = GenerationSettings()

    def settings(seed, steps, guidance, negative, scheduler, **more) -> GenerationSettings:
        return GenerationSettings(
            seed=int(seed),
            steps=int(steps),
            guidance_scale=float(guidance),
            negative_prompt=negative or "",
            scheduler=scheduler,
            **more,
        )

    def run_text(prompt, negative, seed, steps, guidance, scheduler):
        try:
            (item,) = generate(
                model, prompt, settings(seed, steps, guidance, negative, scheduler), progress=False
            )
        except SarPipelineError as exc:
            raise gr.Error(str(exc)) from exc
        return _u8(item.image), _provenance_text(model, item, "text", params)

    def run_img2img(image, prompt, strength, negative, seed, steps, guidance, scheduler):
        from PIL import Image

        if image is None:
            raise gr.Error("upload a SAR tile first")
        grey = np.asarray(
            Image.fromarray(np.asarray(image)).convert("L").resize((size, size), Image.BILINEAR)
        )
        s = settings(seed, steps, guidance, negative, scheduler, strength=float(strength))
        try:
            (item,) = generate(model, prompt, s, init_grey=grey.astype(np.float32) / 255.0, progress=False)
        except SarPipelineError as exc:
            raise gr.Error(str(exc)) from exc
        return _u8(item.image), _provenance_text(model, item, "img2img", params, "uploaded image")

    def run_sketch(editor, prompt, negative, seed, steps, guidance, scheduler):
        if controlnet is None:
            raise gr.Error(
                "no ControlNet: materialise the controlnet_model asset, then restart sar-pipeline serve"
            )
        composite = None if editor is None else editor.get("composite")
        if composite is None:
            raise gr.Error("draw a sketch first")
        rgb = np.asarray(composite)[..., :3]
        classes = sketch_classes(rgb, "canvas", snap=True)  # the brush anti-aliases its edges
        picture = resize_classes(classes_to_rgb(classes), size)
        model.controlnet = controlnet
        try:
            (item,) = generate(
                model,
                prompt,
                settings(seed, steps, guidance, negative, scheduler),
                control_rgb=picture,
                progress=False,
            )
        except SarPipelineError as exc:
            raise gr.Error(str(exc)) from exc
        finally:
            model.controlnet = None
        return _u8(item.image), _provenance_text(model, item, "sketch", params, "canvas")

    def run_sweep(strengths_text, tiles, steps):
        from PIL import Image

        from sar_pipeline.generation.refine import strength_sweep, sweep_plot_png

        if params is None or not model.storage_root:
            raise gr.Error("the model has no dataset recorded: the sweep needs the dataset's tiles")
        simulated, real, prompts = dataset_simulated_and_real(model, int(tiles))
        strengths = [float(s) for s in strengths_text.replace(",", " ").split()]
        sweep = strength_sweep(
            model, simulated, real, prompts, strengths, params, GenerationSettings(steps=int(steps))
        )
        plot = np.asarray(Image.open(io.BytesIO(sweep_plot_png(sweep))).convert("RGB"))
        return plot, json.dumps(sweep, indent=1)

    def common_controls():
        with gr.Row():
            negative = gr.Textbox(label="negative prompt", value=defaults.negative_prompt, elem_id="negative")
            seed = gr.Number(label="seed", value=defaults.seed, precision=0, elem_id="seed")
        with gr.Row():
            steps = gr.Slider(1, 100, value=defaults.steps, step=1, label="steps")
            guidance = gr.Slider(1.0, 15.0, value=defaults.guidance_scale, step=0.5, label="guidance scale")
            scheduler = gr.Dropdown(
                list(GenerationSettings.model_fields["scheduler"].annotation.__args__),
                value=defaults.scheduler,
                label="scheduler",
            )
        return negative, seed, steps, guidance, scheduler

    with gr.Blocks(title="sar-pipeline generation", analytics_enabled=False) as app:
        gr.Markdown(
            f"## SAR generation\nModel `{model.path}` (step {model.checkpoint_step}, dataset "
            f"{model.dataset_version}); tiles of {size} px; prompts get the activation token "
            f"'{model.activation_token}' as in training."
        )
        with gr.Tab("Text"):
            prompt = gr.Textbox(label="prompt", value="a river crossing fields", elem_id="prompt")
            controls = common_controls()
            button = gr.Button("Generate", elem_id="generate")
            with gr.Row():
                out = gr.Image(label="generated", format="png", image_mode="L", elem_id="output", height=320)
                prov = gr.Code(label="provenance", language="json", elem_id="provenance")
            button.click(run_text, [prompt, *controls], [out, prov])
        with gr.Tab("Image to image"):
            image = gr.Image(label="SAR tile", image_mode="L", type="numpy")
            prompt2 = gr.Textbox(label="prompt", value="a town")
            strength = gr.Slider(0.05, 1.0, value=defaults.strength, step=0.05, label="strength")
            controls2 = common_controls()
            button2 = gr.Button("Generate")
            with gr.Row():
                out2 = gr.Image(label="generated", format="png", image_mode="L", height=320)
                prov2 = gr.Code(label="provenance", language="json")
            button2.click(run_img2img, [image, prompt2, strength, *controls2], [out2, prov2])
        with gr.Tab("Sketch"):
            background = np.zeros((256, 256, 4), np.uint8)
            background[..., :3] = PALETTE[FIELD][1]
            background[..., 3] = 255
            colours = [h for name, h in palette_hex().items() if name not in ("nodata",)]
            with gr.Row():
                editor = gr.ImageEditor(
                    value={"background": background, "layers": [], "composite": background},
                    brush=gr.Brush(
                        colors=colours, color_mode="fixed", default_color=colours[0], default_size=12
                    ),
                    eraser=False,
                    layers=False,
                    sources=(),
                    canvas_size=(256, 256),
                    fixed_canvas=True,
                    label="sketch (land-cover palette)",
                    type="numpy",
                )
                gr.Image(value=np.asarray(_png_array(legend_png())), label="palette", interactive=False)
            prompt3 = gr.Textbox(label="prompt", value="fields and a forest")
            controls3 = common_controls()
            button3 = gr.Button("Generate", interactive=controlnet is not None)
            if controlnet is None:
                gr.Markdown("No ControlNet: materialise the `controlnet_model` asset to draw from sketches.")
            with gr.Row():
                out3 = gr.Image(label="generated", format="png", image_mode="L", height=320)
                prov3 = gr.Code(label="provenance", language="json")
            button3.click(run_sketch, [editor, prompt3, *controls3], [out3, prov3])
        with gr.Tab("Refine simulated"):
            gr.Markdown(
                "Refine the dataset's simulated (noise-free) tiles at several strengths: speckle (log10 "
                "ENL over homogeneous windows) against real tiles, and the structure kept."
            )
            strengths = gr.Textbox(label="strengths", value="0.1 0.3 0.5 0.7")
            tiles = gr.Slider(1, 16, value=4, step=1, label="tiles")
            steps4 = gr.Slider(2, 50, value=20, step=1, label="steps")
            button4 = gr.Button("Measure")
            with gr.Row():
                plot = gr.Image(label="speckle and structure against strength", format="png")
                table = gr.Code(label="figures", language="json")
            button4.click(run_sweep, [strengths, tiles, steps4], [plot, table])
    return app


def _png_array(data: bytes):
    from PIL import Image

    return Image.open(io.BytesIO(data)).convert("RGB")


def dataset_simulated_and_real(model, count: int) -> tuple[list[np.ndarray], list[np.ndarray], list[str]]:
    """Up to ``count`` validation tiles having a simulated (idealised) version: (simulated greys,
    real greys, captions), at the model's size on its grey scale."""
    from sar_pipeline.dataset import load_dataset_table
    from sar_pipeline.diffusion.data import decode_tile

    size = model.resolution
    for split in ("validation", "test", "train"):
        table = load_dataset_table(model.storage_root, version=model.dataset_version, split=split)
        if "idealised_image" not in table.column_names:
            break
        rows = [
            r
            for r in table.select(["image", "idealised_image", "caption"]).to_pylist()
            if r["idealised_image"]
        ]
        if rows:
            rows = rows[:count]

            def grey(data):
                return ((decode_tile(data, size)[0] + 1) / 2).numpy()

            return (
                [grey(r["idealised_image"]["bytes"]) for r in rows],
                [grey(r["image"]["bytes"]) for r in rows],
                [r["caption"] or "" for r in rows],
            )
    from sar_pipeline.errors import SarPipelineError

    raise SarPipelineError(
        model.dataset_version, "no tile of the dataset has a simulated (idealised) version"
    )


def serve(model_folder, controlnet_folder=None, host: str = "127.0.0.1", port: int = 7860) -> None:
    """Build the app and serve it until interrupted (no share link, analytics off)."""
    import gradio as gr

    app = build_app(model_folder, controlnet_folder)
    print(f"sar-pipeline generation page: http://{host}:{port}", flush=True)
    theme = gr.themes.Default(font=["sans-serif"], font_mono=["monospace"])  # system fonts: no font CDN
    app.launch(server_name=host, server_port=port, share=False, inbrowser=False, show_error=True, theme=theme)
