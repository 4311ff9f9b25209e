import io

from PIL import Image

from sar_pipeline.dataset.card import build_card, caption_words, counts_markdown, top_words_markdown
from sar_pipeline.dataset.write import TrainingDatasetSettings, build_dataset
from sar_pipeline_tests.dataset.fixtures import make_flight


def row(flight, band, split, text="An aerial view, a field"):
    return {"flight_id": flight, "frequency_band": band, "split": split, "text": text}


def test_counts_table_per_flight_band_and_split():
    rows = [row("f1", "X", "train")] * 3 + [row("f1", "X", "test"), row("f2", None, "validation")]
    table = counts_markdown(rows)
    lines = table.splitlines()
    assert lines[0] == "| flight | band | train | validation | test | total |"
    assert "| f1 | X | 3 | 0 | 1 | 4 |" in lines
    assert "| f2 | unknown | 0 | 1 | 0 | 1 |" in lines
    assert lines[-1] == "| **all** | | **3** | **1** | **1** | **5** |"


def test_top_words_leave_out_the_activation_token_and_stop_words():
    assert caption_words("An aerial view, a river next to the forest", "An aerial view") == [
        "river",
        "forest",
    ]
    table = top_words_markdown(["An aerial view, a river", "An aerial view, a river and a road"])
    assert table.splitlines()[2] == "| river | 2 |"
    assert "aerial" not in table and "| a |" not in table


def test_card_pictures_from_a_written_dataset(tmp_path):
    make_flight(tmp_path, "flight-a", rows=4, cols=4)
    result = build_dataset(tmp_path, ["flight-a"], TrainingDatasetSettings(block_size_m=10_000.0))
    card = build_card(result.rows, tmp_path, mosaic_tiles=6)
    hist = Image.open(io.BytesIO(card.caption_length_png))
    assert hist.format == "PNG" and hist.size[0] > 100
    mosaic = Image.open(io.BytesIO(card.mosaic_png))
    assert mosaic.size == (4 * 192, 2 * (192 + 14))
    assert "| flight-a | X |" in card.counts_markdown
    assert build_card(result.rows).mosaic_png is None


def test_mosaic_shows_16_bit_tiles_in_grey_levels():
    import numpy as np

    from sar_pipeline.dataset.card import mosaic_png

    ramp = np.linspace(0, 65535, 64 * 64).reshape(64, 64).astype(np.uint16)
    buf = io.BytesIO()
    Image.fromarray(ramp).save(buf, format="PNG")
    mosaic = np.asarray(Image.open(io.BytesIO(mosaic_png([(buf.getvalue(), "a ramp")], cell=64))))
    cell = mosaic[:64, :64, 0].astype(float)
    assert 100 < cell.mean() < 155 and cell.min() < 10  # a grey ramp, not a white square
