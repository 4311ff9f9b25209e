"""The one time parser: every form a time reaches the pipeline in becomes the same aware UTC datetime."""

import datetime as dt

import pandas as pd
import pytest

from sar_pipeline.timestamps import iso_utc, parse_utc

T = dt.datetime(2019, 3, 4, 10, 0, 5, tzinfo=dt.UTC)


@pytest.mark.parametrize(
    "value",
    [
        "2019-03-04T10:00:05Z",  # STAC
        "2019-03-04T10:00:05+00:00",
        "2019-03-04T12:00:05+02:00",  # another zone, converted
        "2019-03-04T10:00:05",  # no zone: UTC
        "2019:03:04 10:00:05",  # TIFF / EXIF tag (TIFFTAG_DATETIME)
        dt.datetime(2019, 3, 4, 10, 0, 5),
        dt.datetime(2019, 3, 4, 11, 0, 5, tzinfo=dt.timezone(dt.timedelta(hours=1))),
        pd.Timestamp("2019-03-04T10:00:05", tz="UTC"),  # read back from Parquet
    ],
)
def test_every_form_gives_the_same_utc_time(value):
    parsed = parse_utc(value)
    assert parsed == T and parsed.utcoffset() == dt.timedelta(0)


def test_none_stays_none_and_bad_values_are_named():
    assert parse_utc(None) is None
    assert parse_utc("2019-03-04") == dt.datetime(2019, 3, 4, tzinfo=dt.UTC)
    with pytest.raises(ValueError, match="'yesterday' is neither ISO 8601 nor TIFF"):
        parse_utc("yesterday")
    with pytest.raises(ValueError, match="1551693605 is a int"):
        parse_utc(1551693605)


def test_iso_text_sorts_as_the_times_do():
    early, late = iso_utc("2019-03-04T10:00:05Z"), iso_utc("2019-03-04T10:00:05.5+00:00")
    assert early == "2019-03-04T10:00:05.000000Z" and early < late
    assert iso_utc("2019-03-04T11:00:00+01:00") < iso_utc("2019-03-04T10:30:00Z")
