"""The generation commands on the tiny trained world: outputs, reproducibility, what changes them, bad input."""

import json
import shutil

import numpy as np
import pytest
import rasterio
from affine import Affine
from PIL import Image

from sar_pipeline.cli import main
from sar_pipeline.generation.conditioning import PALETTE, landcover_to_rgb
from sar_pipeline.generation.output import Provenance, read_provenance
from sar_pipeline_tests.generation.world import PARAMS

FAST = ["--steps", "3", "--scheduler", "ddim"]
CRS = "EPSG:32631"
# rotated grid (heading 30°), 8 m pixels: one 64-px model tile of a 512-px, 1 m tile
ROTATED = Affine.translation(500000, 4800000) * Affine.rotation(30) * Affine.scale(8, -8)


def pixels(path) -> np.ndarray:
    return np.asarray(Image.open(path))


def run(args, capsys) -> tuple[int, str, str]:
    code = main(args)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def only(out_dir, pattern="*.png"):
    (found,) = sorted(out_dir.glob(pattern))
    return found


def test_generate_same_seed_same_image_negative_prompt_changes_it(gen_world, tmp_path, capsys):
    model = str(gen_world["pipeline"])
    outs = []
    for name, extra in (
        ("a", []),
        ("b", []),
        ("neg", ["--negative-prompt", "a town"]),
        ("seed", ["--seed", "5"]),
    ):
        code, _, err = run(
            ["generate", "fields", "--model", model, "--out", str(tmp_path / name), *FAST, *extra], capsys
        )
        assert code == 0, err
        outs.append(pixels(only(tmp_path / name)))
    a, b, negative, other_seed = outs
    assert a.ndim == 2 and a.shape == (64, 64) and a.dtype == np.uint8  # single band
    assert np.array_equal(a, b)
    assert np.abs(a.astype(int) - negative).mean() > 0.5
    assert np.abs(a.astype(int) - other_seed).mean() > 0.5


@pytest.mark.parametrize("scheduler", ["ddim", "euler", "euler_ancestral", "dpmpp_2m_karras", "unipc"])
def test_every_scheduler_draws_an_image(gen_world, tmp_path, capsys, scheduler):
    args = ["generate", "a lake", "--model", str(gen_world["pipeline"]), "--out", str(tmp_path)]
    # 20 steps: Karras sigmas on a zero-terminal-SNR schedule repeat timesteps from there on
    code, _, err = run([*args, "--steps", "20", "--scheduler", scheduler, "--num-images", "2"], capsys)
    assert code == 0, err
    images = [pixels(p) for p in sorted(tmp_path.glob("*.png"))]
    assert len(images) == 2 and all(im.std() > 0 for im in images)
    assert read_provenance(sorted(tmp_path.glob("*.png"))[1]).seed == 1  # image i has seed + i


def test_default_model_is_the_latest_sd_model_and_provenance_round_trips(
    gen_world, tmp_path, capsys, monkeypatch
):
    monkeypatch.setenv("SAR_PIPELINE_STORAGE", str(gen_world["storage"]))
    monkeypatch.delenv("DAGSTER_HOME", raising=False)
    code, out, err = run(["generate", "a lake", "--out", str(tmp_path), *FAST, "--seed", "7"], capsys)
    assert code == 0, err
    png = only(tmp_path)
    p = read_provenance(png)
    assert p.checkpoint == str(gen_world["pipeline"]) and p.checkpoint_step == 2
    assert (p.prompt, p.text, p.seed, p.steps, p.scheduler) == (
        "a lake",
        "An aerial view, a lake",
        7,
        3,
        "ddim",
    )
    assert p.dataset_version == "g1" and (p.db_min, p.db_max, p.bit_depth) == (-25.0, 5.0, 8)
    assert p.guidance_rescale == 0.7  # the tiny preset trains with zero terminal SNR
    # written → read gives the same record
    assert Provenance.from_text_chunks(p.text_chunks(), png) == p
    code, out, err = run(["provenance", str(png)], capsys)
    assert code == 0, err
    assert str(gen_world["pipeline"]) in out and "dataset version: g1" in out
    assert "flight-a (12 tiles), flight-b (12 tiles)" in out
    assert "sd_model run: not in this Dagster instance" in out


def test_img2img_strength_changes_output_and_geotiff_is_georeferenced(gen_world, tmp_path, capsys):
    tile = pixels_of_dataset_tile(gen_world)
    tif = tmp_path / "tile.tif"
    profile = {"driver": "GTiff", "height": 512, "width": 512, "count": 1, "dtype": "uint8", "crs": CRS}
    with rasterio.open(tif, "w", **profile, transform=ROTATED * Affine.scale(64 / 512)) as ds:
        ds.write(np.asarray(Image.fromarray(tile).resize((512, 512), Image.NEAREST)), 1)
    results = {}
    for strength in ("0.3", "0.9"):
        out = tmp_path / strength
        args = ["img2img", str(tif), "a town", "--model", str(gen_world["pipeline"]), "--out", str(out)]
        code, _, err = run([*args, *FAST, "--strength", strength, "--geotiff"], capsys)
        assert code == 0, err
        results[strength] = pixels(only(out))
        with rasterio.open(only(out, "*.tif")) as ds:
            assert ds.crs.to_string() == CRS and ds.dtypes[0] == "float32" and ds.shape == (64, 64)
            assert ds.transform.almost_equals(ROTATED)
            db = ds.read(1)
        assert PARAMS.db_min <= np.nanmin(db) and np.nanmax(db) <= PARAMS.db_max
        # the dB values are the PNG's levels through the dataset's mapping
        from sar_pipeline import radiometry

        expected = radiometry.to_db(np.maximum(results[strength], 1), PARAMS)
        assert np.allclose(db, expected, atol=1e-4)
    assert np.abs(results["0.3"].astype(int) - results["0.9"]).mean() > 0.5
    p = read_provenance(only(tmp_path / "0.3"))
    assert p.mode == "img2img" and p.strength == 0.3 and p.input == str(tif)


def test_geotiff_inverts_the_amplitude_normalisation_the_dataset_records(gen_world, tmp_path, capsys):
    from sar_pipeline import radiometry
    from sar_pipeline_tests.generation.world import write_world

    # the trained model, as if trained on a dataset normalised as A / (μ + 3σ)
    storage = tmp_path / "storage"
    amplitude = radiometry.RadiometryParams.amplitude(mean=0.2, std=0.1)
    write_world(storage, "amp1", n_train=2, size=64, params=amplitude)
    run_dir = storage / "models" / "sd" / "run1"
    shutil.copytree(gen_world["storage"] / "models" / "sd" / "run1", run_dir)
    for name, values in (("train_config.json", {"storage_root": str(storage)}), ("checkpoint.json", {})):
        for path in run_dir.rglob(name):
            path.write_text(json.dumps({**json.loads(path.read_text()), **values, "dataset_version": "amp1"}))
    model = gen_world["pipeline"].relative_to(gen_world["storage"] / "models" / "sd" / "run1")
    args = ["generate", "fields", "--model", str(run_dir / model), "--out", str(tmp_path / "out")]
    code, _, err = run([*args, *FAST, "--geotiff"], capsys)
    assert code == 0, err
    levels = pixels(only(tmp_path / "out"))
    with rasterio.open(only(tmp_path / "out", "*.tif")) as ds:
        db = ds.read(1)
    # the GeoTIFF holds the PNG's levels through the recorded inverse: amplitude (level - 1) / 254 × (μ + 3σ)
    expected_amplitude = np.maximum(np.maximum(levels.astype(np.float64), 1) - 1, 0.5) / 254 * 0.5
    assert np.allclose(10 ** (db / 20), expected_amplitude, rtol=1e-5)
    assert not np.allclose(db, radiometry.to_db(np.maximum(levels, 1), PARAMS), atol=0.5)
    p = read_provenance(only(tmp_path / "out"))
    assert (p.normalisation, p.amplitude_scale, p.dataset_version) == (
        "amplitude",
        pytest.approx(0.5),
        "amp1",
    )


def pixels_of_dataset_tile(gen_world) -> np.ndarray:
    import io

    from sar_pipeline.dataset import load_dataset_table

    row = load_dataset_table(gen_world["storage"], split="validation").slice(0, 1).to_pylist()[0]
    return np.asarray(Image.open(io.BytesIO(row["image"]["bytes"])))


def test_refine_simulated_writes_back_on_the_input_grid(gen_world, tmp_path, capsys):
    # a noise-free amplitude scene larger than the model's tile, on a rotated 2 m grid
    rows, cols = 150, 200
    db = np.full((rows, cols), -10.0, np.float32)
    db[20:80, 30:120] = -20.0
    db[90:140, 100:190] = 0.0
    amplitude = np.sqrt(10 ** (db / 10)).astype(np.float32)
    amplitude[:, :5] = 0  # nodata strip
    scene = tmp_path / "scene_idealised.tif"
    transform = Affine.translation(500000, 4800000) * Affine.rotation(30) * Affine.scale(2, -2)
    with rasterio.open(
        scene,
        "w",
        driver="GTiff",
        height=rows,
        width=cols,
        count=1,
        dtype="float32",
        crs=CRS,
        transform=transform,
    ) as ds:
        ds.write(amplitude, 1)
    out = tmp_path / "out"
    args = ["refine-simulated", str(scene), "--model", str(gen_world["pipeline"]), "--out", str(out)]
    code, stdout, err = run([*args, *FAST, "--strength", "0.4", "--geotiff"], capsys)
    assert code == 0, err
    assert "working at 0.250× the input grid" in stdout  # 2 m input, 8 m model pixels
    assert pixels(only(out)).shape == (rows, cols)
    with rasterio.open(only(out, "*.tif")) as ds:
        assert (
            ds.shape == (rows, cols) and ds.transform.almost_equals(transform) and ds.crs.to_string() == CRS
        )
        refined = ds.read(1)
    assert np.isnan(refined[:, :5]).all() and np.isfinite(refined[:, 10:]).all()
    assert read_provenance(only(out)).mode == "refine-simulated"


def test_sketch_follows_the_sketch_and_geotiff_landcover_input(gen_world, tmp_path, capsys):
    model = ["--model", str(gen_world["pipeline"]), "--controlnet", str(gen_world["controlnet"])]
    results = []
    for name, codes in (("water", 1), ("urban", 5)):
        sketch = tmp_path / f"{name}.png"
        Image.fromarray(landcover_to_rgb(np.full((64, 64), codes, np.uint8))).save(sketch)
        out = tmp_path / f"out-{name}"
        code, _, err = run(["sketch", str(sketch), "fields", *model, "--out", str(out), *FAST], capsys)
        assert code == 0, err
        results.append(pixels(only(out)))
    # a ControlNet 16 steps from zero-initialised output convolutions moves the output a little; an
    # ignored sketch would give identical pixels (how much it follows the sketch: the demo test)
    assert np.abs(results[0].astype(int) - results[1]).mean() > 0.01
    # a land-cover GeoTIFF is a sketch too, and the output is georeferenced like it
    tif = tmp_path / "landcover.tif"
    with rasterio.open(
        tif, "w", driver="GTiff", height=64, width=64, count=1, dtype="uint8", crs=CRS, transform=ROTATED
    ) as ds:
        ds.write(np.full((64, 64), 3, np.uint8), 1)
    out = tmp_path / "out-tif"
    code, _, err = run(
        ["sketch", str(tif), "a forest", *model, "--out", str(out), *FAST, "--geotiff"], capsys
    )
    assert code == 0, err
    with rasterio.open(only(out, "*.tif")) as ds:
        assert ds.transform.almost_equals(ROTATED)
    p = read_provenance(only(out))
    assert p.controlnet == str(gen_world["controlnet"]) and p.controlnet_step == 16


def test_controlnet_run_records_checkpoint_grid_and_adherence(gen_world):
    summary = gen_world["controlnet_summary"]
    checkpoint = json.loads((gen_world["controlnet"].parent / "checkpoint.json").read_text())
    assert checkpoint["step"] == 16 and 0 <= checkpoint["adherence"] <= 1
    assert 0 <= checkpoint["text_only_adherence"] <= 1 and summary["adherence_by_step"] == {
        16: checkpoint["adherence"]
    }
    grid = Image.open(checkpoint["sample_grid"])
    assert grid.size == (3 * 192, 192 + 14)  # sketch | generated | real
    assert (gen_world["storage"] / "models" / "controlnet" / "run1" / "legend.png").is_file()
    assert 0.5 < summary["classifier_accuracy_real"] <= 1  # the classifier reads real tiles


# ----------------------------------------------------------------------------------------------
# bad input


def test_bad_inputs_say_what_is_wrong(gen_world, tmp_path, capsys):
    model = ["--model", str(gen_world["pipeline"]), "--out", str(tmp_path / "out"), *FAST]

    rgba = tmp_path / "rgba.png"
    Image.new("RGBA", (64, 64), (10, 20, 30, 128)).save(rgba)
    code, _, err = run(["img2img", str(rgba), "a lake", *model], capsys)
    assert code == 1 and str(rgba) in err and "image mode 'RGBA'" in err

    wide = tmp_path / "wide.png"
    Image.new("L", (96, 64), 100).save(wide)
    code, _, err = run(["img2img", str(wide), "a lake", *model], capsys)
    assert code == 1 and "96×64 px" in err and "refine-simulated" in err

    colourful = landcover_to_rgb(np.full((64, 64), 2, np.uint8))
    colourful[:10, :10] = (1, 2, 3)
    colourful[40:, 40:] = (250, 0, 250)
    sketch = tmp_path / "sketch.png"
    Image.fromarray(colourful).save(sketch)
    cn = ["--controlnet", str(gen_world["controlnet"])]
    code, _, err = run(["sketch", str(sketch), "fields", *model, *cn], capsys)
    assert code == 1 and "2 colour(s) outside the sketch palette" in err
    assert "#fa00fa (576 px)" in err and "#010203 (100 px)" in err and "water #1e5ac8" in err
    code, _, err = run(["sketch", str(sketch), "fields", *model, *cn, "--snap-to-palette"], capsys)
    assert code == 0, err

    broken = tmp_path / "broken"
    shutil.copytree(gen_world["pipeline"], broken)
    shutil.rmtree(broken / "vae")
    code, _, err = run(["generate", "a lake", "--model", str(broken), *FAST], capsys)
    assert code == 1 and "component folder 'vae/' is missing" in err

    long_prompt = "fields " * 70 + "and a small village near the river"
    code, _, err = run(["generate", long_prompt, *model], capsys)
    assert (
        code == 1
        and "the text encoder reads 77" in err
        and "dropped: 'a small village near the river'" in err
    )


def test_sketch_without_a_controlnet_says_which_asset_to_materialise(
    gen_world, tmp_path, capsys, monkeypatch
):
    storage = tmp_path / "storage"
    storage.mkdir()
    monkeypatch.setenv("SAR_PIPELINE_STORAGE", str(storage))
    monkeypatch.delenv("DAGSTER_HOME", raising=False)
    sketch = tmp_path / "s.png"
    Image.fromarray(landcover_to_rgb(np.full((64, 64), 1, np.uint8))).save(sketch)
    code, _, err = run(
        ["sketch", str(sketch), "a lake", "--model", str(gen_world["pipeline"]), *FAST], capsys
    )
    assert (
        code == 1
        and "no controlnet_model materialised yet" in err
        and "materialise the controlnet_model asset" in err
    )
    code, _, err = run(["generate", "a lake", *FAST], capsys)
    assert code == 1 and "materialise the sd_model asset" in err


def test_palette_is_fixed_and_distinct():
    colours = [rgb for _, rgb in PALETTE.values()]
    assert len(set(colours)) == len(colours)
