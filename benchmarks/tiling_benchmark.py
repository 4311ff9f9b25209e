"""Tiling throughput: our end-to-end tiler vs GDAL's command-line tools vs the raw decode rate.

Generates a float32 amplitude COG in native SAR geometry (rotated geotransform, gamma speckle,
nodata outside a swath), then times, on the same file and machine, one after the other:

1. **decode**: reading every block of the COG with rasterio (the floor any tiler pays);
2. **ours**: ``sar_pipeline.geo.tiling.tile_flight`` — windowed warp to the fixed-GSD native grid
   (average in intensity), dB, 8-bit, 512² split, nodata filter, PNG files + manifest rows;
3. **GDAL CLI**: ``gdalwarp -r average`` into a GeoTIFF created on the same rotated target grid,
   then one ``gdal_translate -scale -ot Byte -of PNG -srcwin`` per 512² tile (linear scaling: the
   CLI has no dB step, which only favours it).

Throughput is in source megapixels per second and tiles written per second (the GDAL CLI
writes the same tiles ours kept). GDAL CLI tools come
from ``apt-get install gdal-bin`` (benchmark only; the project does not need them).

    .venv/bin/python benchmarks/tiling_benchmark.py --size 8192      # a few minutes on 2 cores
    .venv/bin/python benchmarks/tiling_benchmark.py                  # 16384² (the issue's size)
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np
import rasterio
import rasterio.shutil
from rasterio.windows import Window

from sar_pipeline.archive.protocol import SceneRecord
from sar_pipeline.geo.grid import build_output_grid
from sar_pipeline.geo.settings import TilingSettings
from sar_pipeline.geo.tiling import tile_flight

CRS = "EPSG:32631"
HEADING_DEG = 30.0
SPACING_RANGE_M, SPACING_AZIMUTH_M = 0.8, 0.9


def native_transform(size: int):
    """Right-looking native geometry: columns along the look direction, rows along the heading."""
    from affine import Affine

    h = math.radians(HEADING_DEG)
    flight = np.array([math.sin(h), math.cos(h)]) * SPACING_AZIMUTH_M
    look = np.array([math.cos(h), -math.sin(h)]) * SPACING_RANGE_M
    return Affine(look[0], flight[0], 500_000.0, look[1], flight[1], 4_800_000.0)


def generate_scene(path: Path, size: int, seed: int = 0) -> None:
    """A float32 amplitude COG (DEFLATE, 512² blocks, overviews), written strip by strip."""
    rng = np.random.default_rng(seed)
    tmp = path.with_suffix(".strips.tif")
    profile = dict(driver="GTiff", height=size, width=size, count=1, dtype="float32", crs=CRS,
                   transform=native_transform(size), nodata=0.0, tiled=True, blockxsize=512, blockysize=512,
                   compress="DEFLATE", BIGTIFF="IF_SAFER")  # fmt: skip
    cols = np.arange(size)
    with rasterio.open(tmp, "w", **profile) as dst:
        for r0 in range(0, size, 512):
            rows = min(512, size - r0)
            # σ⁰ pattern (fields) times 4-look gamma speckle; nodata before near range / after far range
            field = 0.02 + 0.08 * (((cols[None, :] // 700) + ((r0 + np.arange(rows)[:, None]) // 900)) % 3)
            intensity = field * rng.gamma(4.0, 0.25, size=(rows, size))
            amp = np.sqrt(intensity).astype(np.float32)
            edge = int(0.03 * size)
            amp[:, :edge] = 0
            amp[:, size - edge :] = 0
            dst.write(amp, 1, window=Window(0, r0, size, rows))
    rasterio.shutil.copy(tmp, path, driver="COG", COMPRESS="DEFLATE", BLOCKSIZE=512, BIGTIFF="IF_SAFER")
    tmp.unlink()


def time_decode(path: Path) -> float:
    t0 = time.perf_counter()
    with rasterio.open(path) as ds:
        for _, window in ds.block_windows(1):
            ds.read(1, window=window)
    return time.perf_counter() - t0


def time_ours(path: Path, out: Path, params: TilingSettings) -> tuple[float, int, list[tuple[int, int]]]:
    with rasterio.open(path) as ds:
        scene = SceneRecord(scene_id="bench", flight_id="bench", raster_href=str(path), crs=CRS,
                            transform=tuple(ds.transform)[:6], shape=(ds.height, ds.width), nodata=0.0,
                            value_unit="amplitude", heading_deg=HEADING_DEG, observation_direction="right")  # fmt: skip
    shutil.rmtree(out, ignore_errors=True)  # every run writes into a fresh folder
    out.mkdir(parents=True)
    t0 = time.perf_counter()
    result = tile_flight(
        [scene], lambda s: rasterio.open(s.raster_href), params, out, "bench", max_previews=0
    )
    seconds = time.perf_counter() - t0
    return (
        seconds,
        len(result.rows) + len(result.dropped),
        [(r["row_off"], r["col_off"]) for r in result.rows],
    )


def time_gdal_cli(
    path: Path, out: Path, params: TilingSettings, kept: list[tuple[int, int]]
) -> tuple[float, float, int]:
    """gdalwarp onto the same grid, then gdal_translate for the tiles ours kept (GDAL is not charged
    for deciding which tiles to drop, nor for the dB step: a conservative reference)."""
    with rasterio.open(path) as ds:
        grid = build_output_grid(CRS, ds.transform, (ds.height, ds.width), params.ground_sample_distance_m,
                                 heading_deg=HEADING_DEG, observation_direction="right")  # fmt: skip
    out.mkdir(parents=True, exist_ok=True)
    warped = out / "warped.tif"
    rows, cols = grid.shape
    t0 = time.perf_counter()
    # the target: an empty GeoTIFF on the same rotated grid (gdalwarp warps into an existing file)
    with rasterio.open(warped, "w", driver="GTiff", height=rows, width=cols, count=1, dtype="float32", crs=CRS,
                       transform=grid.transform, nodata=0.0, tiled=True, blockxsize=512, blockysize=512):  # fmt: skip
        pass
    subprocess.run(["gdalwarp", "-q", "-r", params.resampling, "-srcnodata", "0", "-dstnodata", "0", "-wm", "512",
                    str(path), str(warped)], check=True)  # fmt: skip
    warp_s = time.perf_counter() - t0
    size = params.tile_size
    n = 0
    for r0, c0 in kept:
        subprocess.run(["gdal_translate", "-q", "-of", "PNG", "-ot", "Byte", "-scale", "0.03", "1.0", "1", "255",
                        "-srcwin", str(c0), str(r0), str(size), str(size), str(warped),
                        str(out / f"t_{r0}_{c0}.png")], check=True, stderr=subprocess.DEVNULL)  # fmt: skip
        n += 1
    return time.perf_counter() - t0, warp_s, n


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--size", type=int, default=16384, help="scene side in pixels (default 16384)")
    parser.add_argument(
        "--gsd", type=float, default=1.0, help="output ground sample distance, m (default 1.0)"
    )
    parser.add_argument("--tile-size", type=int, default=512)
    parser.add_argument("--threads", type=int, default=1, help="GDAL warp threads for ours (default 1)")
    parser.add_argument(
        "--workers", type=int, default=1, help="bands of tile rows in parallel for ours (default 1)"
    )
    parser.add_argument(
        "--resampling", default="average", help="GDAL resampling, ours and gdalwarp (default average)"
    )
    parser.add_argument("--workdir", type=Path, default=None, help="where to write (default: a temp folder)")
    parser.add_argument("--skip-gdal", action="store_true", help="do not run the GDAL CLI reference")
    parser.add_argument("--json", type=Path, default=None, help="also write the results here")
    parser.add_argument(
        "--repeat",
        type=int,
        default=3,
        help="decode and ours are timed this many times, interleaved; the median is reported (default 3)",
    )
    args = parser.parse_args()

    work = args.workdir or Path(tempfile.mkdtemp(prefix="tiling-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    scene = work / f"scene_{args.size}.tif"
    if not scene.exists():
        t0 = time.perf_counter()
        generate_scene(scene, args.size)
        print(f"generated {scene} ({scene.stat().st_size / 1e6:.0f} MB) in {time.perf_counter() - t0:.1f} s")
    mp = args.size * args.size / 1e6
    params = TilingSettings(
        ground_sample_distance_m=args.gsd,
        tile_size=args.tile_size,
        resampling=args.resampling,
        num_threads=args.threads,
        workers=args.workers,
    )

    results = {"size": args.size, "source_megapixels": mp, "gsd_m": args.gsd, "tile_size": args.tile_size,
               "resampling": args.resampling, "threads": args.threads, "workers": args.workers, "repeat": args.repeat, "machine": f"{platform.machine()}, {os.cpu_count()} cores, {platform.platform()}",
               "gdal": rasterio.__gdal_version__}  # fmt: skip
    time_decode(scene)  # warm the page cache so no contender pays the first read
    # interleaved repeats: a burst of load from other processes hits both contenders alike
    decode_runs, ours_runs = [], []
    for _ in range(max(1, args.repeat)):
        decode_runs.append(time_decode(scene))
        ours_s, ours_tiles, kept = time_ours(scene, work / "ours", params)
        ours_runs.append(ours_s)
    decode_s, ours_s = float(np.median(decode_runs)), float(np.median(ours_runs))
    results["decode"] = {"seconds": decode_s, "mp_per_s": mp / decode_s, "runs_s": decode_runs}
    results["ours"] = {
        "runs_s": ours_runs,
        "kept_tiles": len(kept),
        "seconds": ours_s,
        "mp_per_s": mp / ours_s,
        "tile_positions": ours_tiles,
        "tiles_per_s": len(kept) / ours_s,
    }
    if not args.skip_gdal:
        if shutil.which("gdalwarp") is None:
            raise SystemExit("gdalwarp not found: apt-get install gdal-bin (or pass --skip-gdal)")
        gdal_s, gdal_warp_s, gdal_tiles = time_gdal_cli(scene, work / "gdal", params, kept)
        results["gdal_cli"] = {"seconds": gdal_s, "gdalwarp_seconds": gdal_warp_s, "mp_per_s": mp / gdal_s, "tiles": gdal_tiles,
                               "tiles_per_s": gdal_tiles / gdal_s}  # fmt: skip
        results["ours_vs_gdal_cli"] = gdal_s / ours_s
    results["ours_vs_decode"] = ours_s / decode_s

    print(
        f"scene {args.size}² float32 COG = {mp:.1f} MP, GSD {args.gsd} m, {args.resampling}, tiles {args.tile_size}², {results['machine']}"
    )
    print(f"  (median of {len(ours_runs)} interleaved runs; load average {os.getloadavg()[0]:.1f})")
    print(f"  raw decode : {decode_s:7.2f} s  {mp / decode_s:8.1f} MP/s")
    print(
        f"  ours       : {ours_s:7.2f} s  {mp / ours_s:8.1f} MP/s  {len(kept) / ours_s:7.1f} tiles/s ({len(kept)} kept of {ours_tiles} positions)"
    )
    if "gdal_cli" in results:
        g = results["gdal_cli"]
        print(
            f"  GDAL CLI   : {g['seconds']:7.2f} s  {g['mp_per_s']:8.1f} MP/s  {g['tiles_per_s']:7.1f} tiles/s ({g['tiles']} tiles written; gdalwarp {gdal_warp_s:.2f} s)"
        )
        print(f"  ours / GDAL CLI throughput ratio: {results['ours_vs_gdal_cli']:.2f}×")
    print(f"  ours time / raw decode time: {results['ours_vs_decode']:.2f}×")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
