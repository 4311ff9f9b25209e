"""The generation commands of ``sar-pipeline``: generate, img2img, refine-simulated, sketch, provenance, serve.

Beside ``cli.py`` (not in the generation package): the default model comes from the Dagster instance
(``lineage``); the generation package itself never imports Dagster.

    sar-pipeline generate "a river crossing fields" --negative-prompt "buildings" --num-images 4
    sar-pipeline img2img tile.png "a town" --strength 0.4 --geotiff
    sar-pipeline refine-simulated scene_idealised.tif --strength 0.3
    sar-pipeline sketch sketch.png "fields and a forest"
    sar-pipeline provenance generated/text-00.png
    sar-pipeline serve                                   # http://127.0.0.1:7860

``--model`` defaults to the promoted ``sd_model`` checkpoint (``models/sd/promoted.json``, written by
``sar_fidelity``'s check when a checkpoint beats the base model), else the latest ``sd_model``
materialisation (the Dagster instance of ``$DAGSTER_HOME``, else the storage root's
``models/sd/latest.json``); ``--controlnet`` likewise to
the latest ``controlnet_model``. On an ``s3://`` storage root ($SAR_PIPELINE_STORAGE) the model is
pulled into this machine's copy ($SAR_PIPELINE_CACHE) when missing there, whichever machine trained
it. Outputs go to ``--out`` (default ``<data>/generated``).
"""

from __future__ import annotations

import argparse
import typing
from pathlib import Path
from typing import Any

from sar_pipeline.generation.settings import GenerationSettings

#: options of GenerationSettings each command takes (the rest do not apply to it)
_ONLY_WITH = {"strength": ("img2img", "refine-simulated"), "conditioning_scale": ("sketch",)}


def _storage_root() -> str:
    """The storage root the pipeline writes to: $SAR_PIPELINE_STORAGE, else the default one. On an
    ``s3://`` root the model is pulled into this machine's copy ($SAR_PIPELINE_CACHE)."""
    from sar_pipeline.storage import storage_settings_from_environment

    return storage_settings_from_environment().uri


def _dataset_root(recorded: str | None) -> str:
    """Where a model's dataset is read: the storage root its run recorded (``train_config.json``)
    when that folder is on this machine, else this machine's storage root (the run trained on
    another machine, in its copy of the same ``s3://`` root)."""
    return recorded if recorded and Path(recorded).is_dir() else _storage_root()


def _add_settings(parser: argparse.ArgumentParser, command: str) -> None:
    """One ``--option`` per GenerationSettings field (its description and default as help)."""
    for name, info in GenerationSettings.model_fields.items():
        if command not in _ONLY_WITH.get(name, (command,)):
            continue
        annotation = info.annotation
        kwargs: dict[str, Any] = {"default": None, "help": f"{info.description} (default {info.default!r})"}
        if typing.get_origin(annotation) is typing.Literal:
            kwargs["choices"] = typing.get_args(annotation)
        else:
            base = [a for a in typing.get_args(annotation) if a is not type(None)] or [annotation]
            kwargs["type"] = base[0]
        parser.add_argument("--" + name.replace("_", "-"), dest=name, **kwargs)


def _settings(args: argparse.Namespace) -> GenerationSettings:
    from sar_pipeline.errors import ConfigError
    from sar_pipeline.settings import Settings  # noqa: F401  (the validation error type below)

    values = {
        n: getattr(args, n) for n in GenerationSettings.model_fields if getattr(args, n, None) is not None
    }
    try:
        return GenerationSettings.model_validate(values)
    except Exception as exc:  # pydantic's message names the option
        raise ConfigError("generation options", str(exc)) from exc


def _common(parser: argparse.ArgumentParser, command: str) -> None:
    parser.add_argument(
        "--model",
        help="sd_model pipeline folder (default: the promoted sd_model checkpoint, else the latest sd_model)",
    )
    parser.add_argument("--out", help="output folder (default <data>/generated)")
    parser.add_argument(
        "--geotiff",
        action="store_true",
        help="also write a float32 GeoTIFF of calibrated dB (through the dataset's mapping), georeferenced "
        "when the input was",
    )
    _add_settings(parser, command)


def add_commands(sub) -> None:
    """Add the generation sub-commands to ``sar-pipeline``'s sub-parsers."""
    p = sub.add_parser("generate", help="text → SAR tiles")
    p.add_argument(
        "prompt", help="what to draw, e.g. 'a river crossing fields' (the activation token is added)"
    )
    _common(p, "generate")
    p.set_defaults(func=cmd_generate)

    p = sub.add_parser("img2img", help="SAR tile + text → SAR tiles (re-noise then denoise)")
    p.add_argument(
        "image", help="a square single-band tile: 8/16-bit PNG, or a GeoTIFF (georeferenced output)"
    )
    p.add_argument("prompt")
    p.add_argument(
        "--unit", help="unit of a float GeoTIFF's values: amplitude, intensity or db (default: its tag)"
    )
    _common(p, "img2img")
    p.set_defaults(func=cmd_img2img)

    p = sub.add_parser(
        "refine-simulated", help="simulated (noise-free) SAR scene → realistic, on the input's grid"
    )
    p.add_argument("scene", help="single-band raster (GeoTIFF: e.g. the demo archive's *_idealised.tif)")
    p.add_argument("--prompt", default="", help="what the scene shows (default: the activation token alone)")
    p.add_argument(
        "--unit",
        help="unit of the raster's values: amplitude, intensity or db (default: its tag, else amplitude)",
    )
    _common(p, "refine-simulated")
    p.set_defaults(func=cmd_refine)

    p = sub.add_parser("sketch", help="land-cover sketch in the palette + text → SAR tiles (ControlNet)")
    p.add_argument("sketch", help="RGB picture in the sketch palette, or a single-band land-cover GeoTIFF")
    p.add_argument("prompt")
    p.add_argument(
        "--controlnet", help="ControlNet folder (default: the latest controlnet_model materialisation)"
    )
    p.add_argument(
        "--snap-to-palette", action="store_true", help="map colours outside the palette to the nearest one"
    )
    _common(p, "sketch")
    p.set_defaults(func=cmd_sketch)

    p = sub.add_parser("provenance", help="how a generated PNG was made and what its model was trained on")
    p.add_argument("image")
    p.set_defaults(func=cmd_provenance)

    p = sub.add_parser("serve", help="the local generation web page (Gradio)")
    p.add_argument(
        "--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)"
    )
    p.add_argument("--port", type=int, default=7860)
    p.add_argument(
        "--model",
        help="sd_model pipeline folder (default: the promoted sd_model checkpoint, else the latest sd_model)",
    )
    p.add_argument("--controlnet", help="ControlNet folder (default: the latest controlnet_model, if any)")
    p.set_defaults(func=cmd_serve)


# ----------------------------------------------------------------------------------------------


def resolve_model_folder(explicit: str | None, asset: str = "sd_model") -> Path:
    """``explicit``, else for ``sd_model`` the promoted checkpoint (``models/sd/promoted.json``), else
    the latest materialisation of ``asset`` (instance, then pointer)."""
    from sar_pipeline.generation.model import default_sd_model_folder, latest_model_folder
    from sar_pipeline.lineage import latest_model_from_instance

    if explicit:
        return Path(explicit)
    if asset == "sd_model":
        return default_sd_model_folder(_storage_root(), latest_model_from_instance(asset))
    return latest_model_folder(_storage_root(), asset, latest_model_from_instance(asset))


def load_model(args: argparse.Namespace, settings: GenerationSettings):
    from sar_pipeline.generation.model import load_generation_model

    return load_generation_model(resolve_model_folder(args.model), settings.device, settings.dtype)


def _params(model):
    from sar_pipeline.generation.output import dataset_radiometry

    if model.storage_root and model.dataset_version:
        return dataset_radiometry(_dataset_root(model.storage_root), model.dataset_version)
    return None


def _out_dir(args) -> Path:
    from sar_pipeline import paths

    return Path(args.out) if args.out else paths.data_dir() / "generated"


def _save(
    args, model, results, mode, stem, params, input_path=None, crs=None, transform=None, valid=None
) -> list[Path]:
    from sar_pipeline.generation.output import (
        check_radiometry_for_geotiff,
        provenance_of,
        write_geotiff,
        write_png,
    )

    if args.geotiff:
        check_radiometry_for_geotiff(params, model.path)
    out_dir = _out_dir(args)
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for item in results:
        provenance = provenance_of(model, item, mode, params, input_path)
        png = write_png(out_dir / f"{stem}-seed{item.seed}.png", item.image, provenance)
        written.append(png)
        line = f"{png}  (channel spread mean {item.channel_spread_mean:.4f})"
        if args.geotiff:
            tif = write_geotiff(
                png.with_suffix(".tif"), item.image, params, provenance, crs, transform, valid
            )
            line += f"\n{tif}  (float32 dB{', georeferenced' if crs is not None else ''})"
        print(line)
    return written


def cmd_generate(args) -> int:
    from sar_pipeline.generation.sample import generate

    settings = _settings(args)
    model = load_model(args, settings)
    results = generate(model, args.prompt, settings)
    _save(args, model, results, "text", "text", _params(model))
    return 0


def cmd_img2img(args) -> int:
    from sar_pipeline.generation.output import read_input_raster, square_to_size
    from sar_pipeline.generation.sample import generate

    settings = _settings(args)
    model = load_model(args, settings)
    params = _params(model)
    inp = read_input_raster(args.image, params, args.unit)
    size = settings.size_px or model.resolution
    grey, transform = square_to_size(inp, size)
    results = generate(model, args.prompt, settings, init_grey=grey)
    _save(
        args,
        model,
        results,
        "img2img",
        f"img2img-{Path(args.image).stem}",
        params,
        str(args.image),
        inp.crs,
        transform,
    )
    return 0


def cmd_refine(args) -> int:
    from sar_pipeline.generation.output import read_input_raster
    from sar_pipeline.generation.refine import pixel_size_m, refine_scene

    settings = _settings(args)
    model = load_model(args, settings)
    params = _params(model)
    inp = read_input_raster(args.scene, params, args.unit)
    scale = 1.0
    model_pixel = _model_pixel_m(model)
    input_pixel = pixel_size_m(inp.transform)
    if model_pixel and input_pixel:
        scale = input_pixel / model_pixel
        print(
            f"input pixel {input_pixel:.2f} m, model pixel {model_pixel:.2f} m: working at {scale:.3f}× the input grid"
        )
    refined = refine_scene(model, inp.grey, inp.valid, args.prompt, settings, params, scale)
    print(f"{refined.tiles} tile(s) refined")
    first = refined.first
    first.image = refined.grey
    _save(
        args,
        model,
        [first],
        "refine-simulated",
        f"refined-{Path(args.scene).stem}",
        params,
        str(args.scene),
        inp.crs,
        inp.transform,
        inp.valid,
    )
    return 0


def _model_pixel_m(model) -> float | None:
    """Ground size (m) of one model pixel: the dataset's GSD × tile side / model side (None if unknown)."""
    if not (model.storage_root and model.dataset_version):
        return None
    from sar_pipeline.dataset import load_dataset_table
    from sar_pipeline.errors import SarPipelineError

    try:
        table = load_dataset_table(
            _dataset_root(model.storage_root), version=model.dataset_version, split="train"
        )
    except SarPipelineError:
        return None
    if "ground_sample_distance_m" not in table.column_names or table.num_rows == 0:
        return None
    import io

    import numpy as np
    from PIL import Image

    gsd = float(np.nanmedian(np.asarray(table.column("ground_sample_distance_m").to_pylist(), dtype=float)))
    side = Image.open(io.BytesIO(table.column("image")[0].as_py()["bytes"])).size[0]
    return gsd * side / model.resolution


def cmd_sketch(args) -> int:
    from sar_pipeline.generation.model import load_controlnet
    from sar_pipeline.generation.output import read_sketch
    from sar_pipeline.generation.sample import generate

    settings = _settings(args)
    model = load_model(args, settings)
    load_controlnet(model, resolve_model_folder(args.controlnet, "controlnet_model"))
    size = settings.size_px or model.resolution
    rgb, crs, transform = read_sketch(args.sketch, size, snap=args.snap_to_palette)
    results = generate(model, args.prompt, settings, control_rgb=rgb)
    _save(
        args,
        model,
        results,
        "sketch",
        f"sketch-{Path(args.sketch).stem}",
        _params(model),
        str(args.sketch),
        crs,
        transform,
    )
    return 0


def cmd_provenance(args) -> int:
    from sar_pipeline.generation.model import read_json_or_empty
    from sar_pipeline.generation.output import read_provenance
    from sar_pipeline.lineage import describe

    provenance = read_provenance(args.image)
    storage_root = None
    checkpoint = Path(provenance.checkpoint)
    if checkpoint.name == "pipeline":  # models/sd/<run>/checkpoints/checkpoint-N/pipeline
        storage_root = read_json_or_empty(checkpoint.parent.parent.parent / "train_config.json").get(
            "storage_root"
        )
    print("\n".join(describe(provenance, _dataset_root(storage_root))))
    return 0


def cmd_serve(args) -> int:
    from sar_pipeline.generation.webui import serve

    controlnet = None
    try:
        controlnet = resolve_model_folder(args.controlnet, "controlnet_model")
    except Exception as exc:  # the sketch tab says what to materialise
        if args.controlnet:
            raise
        print(f"sketch tab disabled: {exc}")
    serve(resolve_model_folder(args.model), controlnet, host=args.host, port=args.port)
    return 0


def run_command(argv: list[str]) -> int:
    """Run one generation command as ``sar-pipeline`` would (used by the demo)."""
    parser = argparse.ArgumentParser(prog="sar-pipeline")
    add_commands(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return int(args.func(args) or 0)


def demo_generation(archive_dir: Path, out_dir: Path, steps: int = 20) -> list[Path]:
    """The demo's last step: a few images from the demo models — text, img2img from a held-out tile,
    refine-simulated on a scene's idealised raster, sketch from a tile's land cover — under ``out_dir``."""
    import io

    import numpy as np
    from PIL import Image

    from sar_pipeline.dataset import load_dataset_table
    from sar_pipeline.generation.conditioning import landcover_to_rgb

    out_dir.mkdir(parents=True, exist_ok=True)
    fast = ["--steps", str(steps), "--out", str(out_dir)]
    print(f"\ngeneration with the demo models (outputs in {out_dir}):")
    run_command(["generate", "a river crossing fields", "--num-images", "2", *fast])
    table = None
    for split in ("test", "validation", "train"):  # the demo's few tiles may all be in train
        table = load_dataset_table(_storage_root(), split=split)
        if table.num_rows:
            break
    row = table.slice(0, 1).to_pylist()[0]
    tile = out_dir / f"input-{split}-tile-{row['tile_id']}.png"
    tile.write_bytes(row["image"]["bytes"])
    run_command(["img2img", str(tile), "a town", "--strength", "0.5", *fast])
    scenes = sorted(Path(archive_dir).rglob("*_idealised.tif"))
    if scenes:
        # 0.2: speckle like the real tiles, the layout kept (docs/benchmarks.md, the strength sweep)
        run_command(["refine-simulated", str(scenes[0]), "--strength", "0.2", "--geotiff", *fast])
    if row.get("landcover_image"):
        codes = np.asarray(Image.open(io.BytesIO(row["landcover_image"]["bytes"])))
        sketch = out_dir / f"input-sketch-{row['tile_id']}.png"
        Image.fromarray(landcover_to_rgb(codes)).save(sketch)
        run_command(["sketch", str(sketch), row["caption"] or "fields", *fast])
    return sorted(out_dir.glob("*"))
