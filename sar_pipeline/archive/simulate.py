"""Physically plausible simulation of airborne X-band SAR scenes over a synthetic region.

Pure numpy/scipy, no I/O (``archive.demo`` writes the files). The model, in order:

* **Ground** (:func:`simulate_ground`): a north-up land-cover map at ``ground_pixel_m`` (1 m) in
  EPSG:32631 (UTM zone 31N) over a synthetic region just west of Montpellier, France
  (default: x 560 000–565 000 m, y 4 827 000–4 832 000 m, about 3.74–3.81 °E, 43.59–43.64 °N).
  Classes are those of :mod:`sar_pipeline.archive.landcover`: a meandering river with riparian
  forest, Voronoi field parcels each with its own backscatter, forest patches, straight roads,
  and towns whose street grid encloses blocks of buildings 4–25 m tall. Each ground pixel gets a
  height (buildings, forest canopy) and a backscatter coefficient γ⁰ in dB; urban pixels carry
  sparse point scatterers (+10…+20 dB). An RGB orthophoto of the same ground comes with it.
* **Flight** (:func:`flight_parameters`): heading, look direction, altitude, near-range ground
  distance, pixel spacing, looks and scene sizes drawn from the seed; scenes are consecutive
  along the track.
* **Scene** (:func:`simulate_scene`): the image is computed in native SAR geometry, ground-range
  projected: rows are azimuth lines in acquisition order (along the heading), columns are ground
  range from near to far. The affine from pixel to map coordinates is therefore rotated (and, for
  a right-looking radar, mirrored with respect to a map view — as real ground-range products).
  Per pixel: σ⁰ = γ⁰·cos θ with the incidence θ growing across the swath; radar shadow toward far
  range behind tall objects (shadow length h·tan θ); layover toward near range (returns from
  height h land h/tan θ closer), walls facing the radar spread over the layover band with a
  double-bounce line at their foot; a Gaussian impulse response of the system resolution; a
  thermal noise floor (NESZ); multiplicative speckle, intensity ~ Gamma(L, 1/L) for L looks,
  spatially correlated by the same impulse response (each look a filtered complex Gaussian).
  Amplitude = sqrt(intensity), calibrated so that amplitude² is σ⁰ in linear units.
  Pixels outside the region or outside the (irregular) swath edges are nodata (0).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import math

import numpy as np
from affine import Affine
from scipy import ndimage, sparse
from scipy.spatial import cKDTree

from sar_pipeline.archive.landcover import BUILDING, FIELD, FOREST, NODATA, ROAD, URBAN, WATER

REGION_CRS = "EPSG:32631"
#: north-west corner of the default demo region (UTM 31N metres), west of Montpellier
REGION_ORIGIN_XY = (560_000.0, 4_832_000.0)
AMPLITUDE_NODATA = 0.0
X_BAND_CENTER_FREQUENCY_GHZ = 9.6
NOISE_EQUIVALENT_SIGMA0_DB = -25.0
PLATFORM_SPEED_M_S = 70.0
FIRST_ACQUISITION = dt.datetime(2025, 4, 7, 8, 0, tzinfo=dt.UTC)


@dataclasses.dataclass(frozen=True)
class DemoSettings:
    """Sizes of the simulated region and scenes (defaults: the demo archive)."""

    region_size_m: float = 5000.0  # square region side
    ground_pixel_m: float = 1.0  # land-cover / orthophoto / ground-model pixel size
    scene_size_px: tuple[int, int] = (1536, 2048)  # min and max rows/cols of a scene
    max_scenes_per_flight: int = 3


#: a 1 km region with 300–360 pixel scenes: the same simulation in well under a second, for tests
SMALL_DEMO_SETTINGS = DemoSettings(region_size_m=1000.0, scene_size_px=(300, 360), max_scenes_per_flight=2)


@dataclasses.dataclass(frozen=True)
class Ground:
    """The simulated ground, north-up at ``transform`` (pixel corners → EPSG:32631 metres)."""

    landcover: np.ndarray  # uint8 class codes (landcover.py)
    height_m: np.ndarray  # float32 height above terrain (buildings, canopy)
    gamma0_db: np.ndarray  # float32 backscatter γ⁰ in dB (σ⁰ = γ⁰·cos θ)
    orthophoto_rgb: np.ndarray  # uint8 (3, rows, cols)
    transform: Affine
    crs: str = REGION_CRS

    @property
    def shape(self) -> tuple[int, int]:
        return self.landcover.shape


@dataclasses.dataclass(frozen=True)
class SceneGeometry:
    """One scene of a flight: its grid in native SAR geometry and its acquisition time."""

    scene_id: str
    transform: Affine  # pixel corner (col, row) → map x, y; rotated, rows along the heading
    shape: tuple[int, int]  # (azimuth lines, range samples)
    datetime: dt.datetime
    first_range_ground_m: float  # ground distance from the track to the centre of column 0


@dataclasses.dataclass(frozen=True)
class FlightParameters:
    """Acquisition geometry and radar settings of one simulated flight."""

    flight_index: int
    flight_id: str
    heading_deg: float  # clockwise from grid north
    observation_direction: str  # "left" or "right" of the track
    altitude_m: float
    pixel_spacing_range_m: float  # ground range
    pixel_spacing_azimuth_m: float
    looks_range: int
    looks_azimuth: int
    center_frequency_ghz: float
    scenes: tuple[SceneGeometry, ...]

    @property
    def looks_equivalent_number(self) -> float:
        return float(self.looks_range * self.looks_azimuth)

    @property
    def resolution_range_m(self) -> float:
        return round(1.3 * self.pixel_spacing_range_m, 3)

    @property
    def resolution_azimuth_m(self) -> float:
        return round(1.3 * self.pixel_spacing_azimuth_m, 3)

    def incidence_angle_deg(self, scene: SceneGeometry, column: np.ndarray | float) -> np.ndarray:
        """Incidence angle (degrees, flat terrain) at the centre of range column(s) ``column``."""
        ground = (
            scene.first_range_ground_m + np.asarray(column, dtype=np.float64) * self.pixel_spacing_range_m
        )
        return np.degrees(np.arctan2(ground, self.altitude_m))

    @property
    def start_datetime(self) -> dt.datetime:
        return self.scenes[0].datetime

    @property
    def end_datetime(self) -> dt.datetime:
        last = self.scenes[-1]
        return last.datetime + dt.timedelta(
            seconds=last.shape[0] * self.pixel_spacing_azimuth_m / PLATFORM_SPEED_M_S
        )


@dataclasses.dataclass(frozen=True)
class SimulatedScene:
    """The rasters of one scene, on the scene grid (``SceneGeometry.transform``)."""

    amplitude: np.ndarray  # float32, speckled, 0 = nodata
    idealised_amplitude: np.ndarray  # float32, same without speckle, 0 = nodata
    landcover: np.ndarray  # uint8, ground truth at each pixel's ground position, 0 = nodata


def flight_id_for(flight_index: int) -> str:
    return f"demo-flight-{flight_index:03d}"


def region_transform(settings: DemoSettings = DemoSettings()) -> Affine:
    """North-up transform of the ground grid."""
    x0, y0 = REGION_ORIGIN_XY
    p = settings.ground_pixel_m
    return Affine(p, 0.0, x0, 0.0, -p, y0)


def region_shape(settings: DemoSettings = DemoSettings()) -> tuple[int, int]:
    n = int(round(settings.region_size_m / settings.ground_pixel_m))
    return (n, n)


# ---------------------------------------------------------------------------------------------
# ground


def _linear_upsampling(n_out: int, n_in: int, scale: float) -> sparse.csr_matrix:
    """Sparse (n_out × n_in) matrix of linear interpolation from a grid ``scale`` times coarser."""
    position = np.clip((np.arange(n_out) + 0.5) / scale - 0.5, 0, n_in - 1)
    lower = np.floor(position).astype(np.int64)
    upper = np.minimum(lower + 1, n_in - 1)
    weight = (position - lower).astype(np.float32)
    rows = np.repeat(np.arange(n_out), 2)
    cols = np.stack([lower, upper], axis=1).ravel()
    data = np.stack([1 - weight, weight], axis=1).ravel()
    return sparse.csr_matrix((data, (rows, cols)), shape=(n_out, n_in))


def _upsample(coarse: np.ndarray, shape: tuple[int, int], scale: float) -> np.ndarray:
    """``coarse`` (a grid ``scale`` times coarser) linearly interpolated onto ``shape``, float32."""
    along_cols = _linear_upsampling(shape[1], coarse.shape[1], scale) @ coarse.T  # (cols, coarse rows)
    return np.asarray(_linear_upsampling(shape[0], coarse.shape[0], scale) @ along_cols.T, dtype=np.float32)


def _smooth_noise(rng: np.random.Generator, shape: tuple[int, int], scale_px: float) -> np.ndarray:
    """Zero-mean, unit-std float32 noise with correlation length ~``scale_px`` pixels.

    White noise on a grid ``scale_px`` times coarser, linearly interpolated (two sparse products:
    far cheaper than ``ndimage.zoom`` on the full grid).
    """
    coarse_shape = (int(math.ceil(shape[0] / scale_px)) + 2, int(math.ceil(shape[1] / scale_px)) + 2)
    fine = _upsample(rng.standard_normal(coarse_shape).astype(np.float32), shape, scale_px)
    fine -= fine.mean()
    fine /= fine.std() + 1e-6
    return fine


def _rotated(x: np.ndarray, y: np.ndarray, angle_rad: float) -> tuple[np.ndarray, np.ndarray]:
    c, s = math.cos(angle_rad), math.sin(angle_rad)
    return c * x + s * y, -s * x + c * y


def simulate_ground(seed: int, settings: DemoSettings = DemoSettings()) -> Ground:
    """Simulate the demo region's land cover, heights, γ⁰ (dB) and orthophoto for ``seed``."""
    rng = np.random.default_rng([seed, 0])
    rows, cols = region_shape(settings)
    p = settings.ground_pixel_m
    size = settings.region_size_m
    # metres east / south of the north-west corner, at pixel centres
    x = ((np.arange(cols, dtype=np.float32) + 0.5) * p)[None, :]
    y = ((np.arange(rows, dtype=np.float32) + 0.5) * p)[:, None]

    # field parcels: Voronoi cells of random seeds (~150 m apart), on a 2 m grid then upsampled
    n_parcels = max(8, int(size * size / 150.0**2))
    parcel_seeds = rng.uniform(0, size, (n_parcels, 2))
    step = max(1, int(round(2.0 / p)))
    yc, xc = np.mgrid[0:rows:step, 0:cols:step].astype(np.float32)
    _, parcel_coarse = cKDTree(parcel_seeds).query(
        np.c_[(xc.ravel() + 0.5) * p, (yc.ravel() + 0.5) * p], workers=2
    )
    parcel_coarse = parcel_coarse.reshape(xc.shape).astype(np.int32)
    parcel = np.repeat(np.repeat(parcel_coarse, step, 0), step, 1)[:rows, :cols]
    parcel_db = rng.uniform(-12.5, -6.0, n_parcels).astype(np.float32)
    parcel_is_forest = rng.random(n_parcels) < 0.12
    field_palette = np.array(
        [[122, 150, 62], [170, 162, 84], [196, 178, 112], [98, 128, 52], [150, 122, 82], [138, 160, 90]],
        dtype=np.float32,
    )
    parcel_colour = rng.integers(0, len(field_palette), n_parcels)

    landcover = np.full((rows, cols), FIELD, dtype=np.uint8)
    large_noise = _smooth_noise(rng, (rows, cols), 400.0 / p)
    forest = parcel_is_forest[parcel] | (large_noise > 1.3)

    # river: a meandering band through the region at a random angle. The distance to its centre
    # line is smooth, so it is computed on a 2 m grid and interpolated; python-float parameters
    # keep the arithmetic in float32.
    angle = float(rng.uniform(0, math.pi))
    rows2, cols2 = (rows + 1) // 2, (cols + 1) // 2
    x2 = ((np.arange(cols2, dtype=np.float32) + 0.5) * 2 * p)[None, :]
    y2 = ((np.arange(rows2, dtype=np.float32) + 0.5) * 2 * p)[:, None]
    u, v = _rotated(x2 - size / 2, y2 - size / 2, angle)
    k1, k2 = 2 * math.pi / float(rng.uniform(1800, 3000)), 2 * math.pi / float(rng.uniform(500, 900))
    a1, a2 = float(rng.uniform(150, 350)), float(rng.uniform(30, 80))
    ph1, ph2 = (float(val) for val in rng.uniform(0, 2 * math.pi, 2))
    offset = float(rng.uniform(-0.15, 0.15)) * size
    centre = offset + a1 * np.sin(k1 * u + ph1) + a2 * np.sin(k2 * u + ph2)
    slope = a1 * k1 * np.cos(k1 * u + ph1) + a2 * k2 * np.cos(k2 * u + ph2)
    river_distance = _upsample(np.abs(v - centre) / np.sqrt(1 + slope * slope), (rows, cols), 2.0)
    del u, v, centre, slope
    half_width = 18.0 + 6.0 * _smooth_noise(rng, (rows, cols), 300.0 / p)
    water = river_distance < half_width
    forest |= (river_distance < half_width + 35.0 + 25.0 * large_noise) & ~water
    del river_distance

    # towns: irregular discs with a rotated street grid and building lots
    town = np.zeros((rows, cols), dtype=bool)
    street = np.zeros((rows, cols), dtype=bool)
    building_height = np.zeros((rows, cols), dtype=np.float32)
    roof_db = np.zeros((rows, cols), dtype=np.float32)
    roof_red = np.zeros((rows, cols), dtype=bool)
    town_noise = _smooth_noise(rng, (rows, cols), 150.0 / p)
    town_centres = []
    for radius in (0.16 * size, 0.07 * size):
        cx, cy = (float(val) for val in rng.uniform(0.25, 0.75, 2) * size)
        town_centres.append((cx, cy))
        # work in the town's bounding box only: everything outside is countryside
        r0, r1 = max(0, int((cy - 1.4 * radius) / p)), min(rows, int((cy + 1.4 * radius) / p) + 1)
        c0, c1 = max(0, int((cx - 1.4 * radius) / p)), min(cols, int((cx + 1.4 * radius) / p) + 1)
        box = (slice(r0, r1), slice(c0, c1))
        bx, by = x[:, c0:c1], y[r0:r1, :]
        dist = np.sqrt((bx - cx) ** 2 + (by - cy) ** 2)
        in_town = (dist / radius + 0.3 * town_noise[box] < 1.0) & ~water[box]
        town[box] |= in_town
        tu, tv = _rotated(bx - cx, by - cy, float(rng.uniform(0, math.pi / 2)))
        block = float(rng.uniform(70, 110))
        street_width = float(rng.uniform(9, 13))
        mu, mv = np.mod(tu, block), np.mod(tv, block)
        street[box] |= in_town & ((mu < street_width) | (mv < street_width))
        lot_u, lot_v = float(rng.uniform(16, 26)), float(rng.uniform(14, 22))
        iu, iv = np.floor(tu / lot_u).astype(np.int64), np.floor(tv / lot_v).astype(np.int64)
        lot_hash = ((iu * 73856093) ^ (iv * 19349663)) & 0xFFFF
        lot_table = (
            np.random.default_rng([seed, 7, len(town_centres)]).random((4, 0x10000)).astype(np.float32)
        )
        occupied = lot_table[0][lot_hash] < 0.78
        margin = 2.0
        lu, lv = np.mod(tu, lot_u), np.mod(tv, lot_v)
        inside_lot = (lu > margin) & (lu < lot_u - margin) & (lv > margin) & (lv < lot_v - margin)
        is_building = in_town & occupied & inside_lot & ~street[box]
        centrality = np.clip(1.0 - dist / radius, 0, 1)
        height = 4.0 + lot_table[1][lot_hash] * (8.0 + 13.0 * centrality)
        building_height[box] = np.where(is_building, height, building_height[box])
        roof_db[box] = np.where(is_building, -7.0 + 4.0 * lot_table[2][lot_hash], roof_db[box])
        roof_red[box] |= is_building & (lot_table[3][lot_hash] < 0.6)

    # roads: straight lines through the towns and across the region (bridges over the river)
    road = street.copy()
    for i in range(4):
        cx, cy = town_centres[i] if i < 2 else (float(val) for val in rng.uniform(0.1, 0.9, 2) * size)
        theta = float(rng.uniform(0, math.pi))
        width = float(rng.uniform(6, 10))
        road |= np.abs(-(x - cx) * math.sin(theta) + (y - cy) * math.cos(theta)) < width / 2

    landcover[forest] = FOREST
    landcover[water] = WATER
    landcover[town] = URBAN
    landcover[building_height > 0] = BUILDING
    landcover[road] = ROAD
    building = landcover == BUILDING
    forest = landcover == FOREST
    del large_noise, town_noise, half_width, water, town, street, road

    texture = _smooth_noise(rng, (rows, cols), 3.0 / p)
    canopy = np.clip(15.0 + 3.0 * _smooth_noise(rng, (rows, cols), 40.0 / p), 8.0, 24.0)
    height_m = np.where(building, building_height, np.where(forest, canopy, 0.0)).astype(np.float32)

    # γ⁰ = per-class (per-parcel, per-roof) level + per-class texture gain × texture
    class_db = np.zeros(256, dtype=np.float32)
    class_gain = np.zeros(256, dtype=np.float32)
    for code, level, gain in (
        (FIELD, 0.0, 0.7),
        (FOREST, -5.5, 1.6),
        (WATER, -20.0, 0.8),
        (URBAN, -7.5, 1.5),
        (ROAD, -17.0, 0.5),
        (BUILDING, 0.0, 0.5),
    ):
        class_db[code], class_gain[code] = level, gain
    gamma0_db = np.where(landcover == FIELD, parcel_db[parcel], class_db[landcover])
    gamma0_db[building] = roof_db[building]
    gamma0_db += class_gain[landcover] * texture
    scatterers = (landcover >= URBAN) & (rng.random((rows, cols), dtype=np.float32) < 0.004)
    gamma0_db[scatterers] = rng.uniform(10.0, 20.0, int(scatterers.sum())).astype(np.float32)

    # orthophoto: a colour per class (per parcel for fields, red or grey roofs), shaded by texture
    n_field = len(field_palette)
    class_colours = {
        WATER: (45, 72, 108),
        FOREST: (38, 72, 40),
        ROAD: (112, 112, 110),
        URBAN: (168, 162, 150),
    }
    roof_colours = ((176, 84, 64), (128, 128, 134))
    palette = np.concatenate([field_palette, np.array([*class_colours.values(), *roof_colours], np.float32)])
    class_colour_index = np.zeros(256, dtype=np.uint8)
    for i, code in enumerate(class_colours):
        class_colour_index[code] = n_field + i
    colour_index = np.where(landcover == FIELD, parcel_colour[parcel], class_colour_index[landcover]).astype(
        np.uint8
    )
    red_roof, grey_roof = n_field + len(class_colours), n_field + len(class_colours) + 1
    colour_index[building] = np.where(roof_red[building], red_roof, grey_roof)
    shade = 1.0 + 0.08 * texture
    shade[forest] += 0.12 * texture[forest]
    rgb = np.empty((3, rows, cols), dtype=np.uint8)
    for band in range(3):
        rgb[band] = np.clip(palette[:, band][colour_index] * shade, 0, 255)

    return Ground(
        landcover=landcover,
        height_m=height_m,
        gamma0_db=gamma0_db,
        orthophoto_rgb=rgb,
        transform=region_transform(settings),
    )


# ---------------------------------------------------------------------------------------------
# flights


def flight_parameters(
    seed: int, flight_index: int, settings: DemoSettings = DemoSettings()
) -> FlightParameters:
    """The geometry of flight ``flight_index`` for ``seed`` (independent of how many flights exist)."""
    rng = np.random.default_rng([seed, 1, flight_index])
    flight_id = flight_id_for(flight_index)
    # golden-angle steps from a per-seed start: any number of flights covers many headings
    first_heading = float(np.random.default_rng([seed, 3]).uniform(0, 360))
    heading = float(round((first_heading + 137.508 * flight_index + rng.uniform(-15, 15)) % 360, 2))
    direction = "left" if flight_index % 3 == 1 else "right"  # both geometries in any demo of 2+
    altitude = float(round(rng.uniform(2500, 4000), 1))
    near_range_ground = float(round(rng.uniform(0.5, 0.9) * altitude, 1))
    spacing_range = float(round(rng.uniform(0.6, 1.2), 3))
    spacing_azimuth = float(round(rng.uniform(0.5, 1.0), 3))
    looks_azimuth = int(rng.integers(1, 5))
    n_scenes = int(rng.integers(1, settings.max_scenes_per_flight + 1))
    lo, hi = settings.scene_size_px
    cols = int(rng.integers(lo, hi + 1))
    # keep the whole track within ~90% of the region so scenes are mostly valid
    max_rows = int(0.9 * settings.region_size_m / (n_scenes * spacing_azimuth))
    rows = int(min(rng.integers(lo, hi + 1), max(max_rows, lo // 2)))

    h = math.radians(heading)
    along = np.array([math.sin(h), math.cos(h)])
    across = (
        np.array([math.cos(h), -math.sin(h)])
        if direction == "right"
        else -np.array([math.cos(h), -math.sin(h)])
    )
    x0, y0 = REGION_ORIGIN_XY
    size = settings.region_size_m
    swath_centre = np.array([x0 + size / 2, y0 - size / 2]) + rng.uniform(-0.1, 0.1, 2) * size
    swath_width = cols * spacing_range
    track_length = n_scenes * rows * spacing_azimuth
    start = dt.timedelta(days=7 * flight_index + int(rng.integers(0, 5)), minutes=int(rng.integers(0, 600)))
    scenes = []
    for k in range(n_scenes):
        corner = (
            swath_centre - swath_width / 2 * across + (k * rows * spacing_azimuth - track_length / 2) * along
        )
        transform = Affine(
            spacing_range * across[0],
            spacing_azimuth * along[0],
            float(corner[0]),
            spacing_range * across[1],
            spacing_azimuth * along[1],
            float(corner[1]),
        )
        acquired = (
            FIRST_ACQUISITION + start + dt.timedelta(seconds=k * rows * spacing_azimuth / PLATFORM_SPEED_M_S)
        )
        scenes.append(
            SceneGeometry(
                scene_id=f"{flight_id}-scene-{k:02d}",
                transform=transform,
                shape=(rows, cols),
                datetime=acquired.replace(microsecond=0),
                first_range_ground_m=near_range_ground + 0.5 * spacing_range,
            )
        )
    return FlightParameters(
        flight_index=flight_index,
        flight_id=flight_id,
        heading_deg=heading,
        observation_direction=direction,
        altitude_m=altitude,
        pixel_spacing_range_m=spacing_range,
        pixel_spacing_azimuth_m=spacing_azimuth,
        looks_range=1,
        looks_azimuth=looks_azimuth,
        center_frequency_ghz=X_BAND_CENTER_FREQUENCY_GHZ,
        scenes=tuple(scenes),
    )


# ---------------------------------------------------------------------------------------------
# scenes


def speckle_intensity(
    intensity: np.ndarray, looks: float, rng: np.random.Generator, impulse_sigma_px: float = 0.0
) -> np.ndarray:
    """Multiply ``intensity`` by fully developed speckle: Gamma(shape=L, scale=1/L), mean 1, var 1/L.

    With ``impulse_sigma_px`` > 0 and an integer L, each look is a circular complex Gaussian
    field filtered by the system's (Gaussian) impulse response, as in a real image: the speckle
    is spatially correlated over the resolution cell, and each pixel still follows Gamma(L, 1/L).
    """
    if impulse_sigma_px <= 0 or looks != int(looks):
        factor = rng.gamma(shape=looks, scale=1.0 / looks, size=intensity.shape).astype(np.float32)
        return intensity * factor
    delta = np.zeros((33, 33), dtype=np.float32)
    delta[16, 16] = 1.0
    kernel_energy = float((ndimage.gaussian_filter(delta, impulse_sigma_px) ** 2).sum())
    factor = np.zeros(intensity.shape, dtype=np.float32)
    for _ in range(int(looks)):
        for _part in ("real", "imaginary"):
            field = ndimage.gaussian_filter(
                rng.standard_normal(intensity.shape, dtype=np.float32), impulse_sigma_px, mode="wrap"
            )
            factor += field * field
    factor /= np.float32(2 * kernel_energy * int(looks))
    return intensity * factor


def _sample_ground(
    ground: Ground, transform: Affine, shape: tuple[int, int]
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Ground pixel (row, col) index under each scene pixel centre, and whether it is inside."""
    rows, cols = shape
    to_ground = ~ground.transform @ transform
    c = np.arange(cols, dtype=np.float64)[None, :] + 0.5
    r = np.arange(rows, dtype=np.float64)[:, None] + 0.5
    gc = np.floor(to_ground.a * c + to_ground.b * r + to_ground.c).astype(np.int64)
    gr = np.floor(to_ground.d * c + to_ground.e * r + to_ground.f).astype(np.int64)
    inside = (gc >= 0) & (gc < ground.shape[1]) & (gr >= 0) & (gr < ground.shape[0])
    return np.where(inside, gr, 0), np.where(inside, gc, 0), inside


def simulate_scene(
    ground: Ground, flight: FlightParameters, scene: SceneGeometry, seed: int
) -> SimulatedScene:
    """Simulate one scene of ``flight`` over ``ground`` in native SAR geometry (see module doc)."""
    rng = np.random.default_rng([seed, 2, flight.flight_index, flight.scenes.index(scene)])
    rows, cols = scene.shape
    gr, gc, inside = _sample_ground(ground, scene.transform, scene.shape)
    landcover = np.where(inside, ground.landcover[gr, gc], NODATA).astype(np.uint8)
    height = np.where(inside, ground.height_m[gr, gc], 0.0).astype(np.float32)
    gamma0_db = ground.gamma0_db[gr, gc]
    del gr, gc

    dr = flight.pixel_spacing_range_m
    incidence = np.radians(flight.incidence_angle_deg(scene, np.arange(cols)))
    cot = (1.0 / np.tan(incidence)).astype(np.float32)
    sigma0 = (
        np.power(10.0, gamma0_db / 10.0, dtype=np.float32) * np.cos(incidence).astype(np.float32)[None, :]
    )

    # radar shadow: scan each range line from near to far, following the grazing ray
    height_t = np.ascontiguousarray(height.T)
    shadow_t = np.zeros((cols, rows), dtype=bool)
    ray = height_t[0].copy()
    for j in range(1, cols):
        ray -= dr * cot[j]
        shadow_t[j] = ray > height_t[j] + 0.5
        np.maximum(ray, height_t[j], out=ray)
    shadow = shadow_t.T
    energy = np.where(shadow, 0.0, sigma0).astype(np.float32)

    # layover: a return from height h lands h·cot(θ)/Δr columns closer to the radar
    shift = np.rint(height * cot[None, :] / dr).astype(np.int64)
    col_index = np.arange(cols, dtype=np.int64)[None, :]
    row_base = (np.arange(rows, dtype=np.int64) * cols)[:, None]
    target = col_index - shift
    keep = (target >= 0) & inside
    intensity = np.bincount((row_base + target)[keep], weights=energy[keep], minlength=rows * cols)

    # walls facing the radar: spread over the layover band, double bounce at their foot
    step_up = np.zeros_like(height)
    step_up[:, 1:] = height[:, 1:] - height[:, :-1]
    wall = (step_up > 2.0) & (landcover == BUILDING)
    wall_rows, wall_cols = np.nonzero(wall)
    if wall_rows.size:
        foot = wall_cols - shift[wall_rows, wall_cols - 1]
        top = wall_cols - shift[wall_rows, wall_cols]
        band = np.maximum(foot - top, 1)
        starts = np.repeat(top, band)
        offsets = np.arange(band.sum()) - np.repeat(np.cumsum(band) - band, band)
        wall_target_cols = starts + offsets
        wall_target_rows = np.repeat(wall_rows, band)
        ok = (wall_target_cols >= 0) & (wall_target_cols < cols)
        wall_sigma0 = 10 ** (-4.0 / 10) * np.cos(incidence[wall_target_cols[ok]])
        intensity += np.bincount(
            wall_target_rows[ok] * cols + wall_target_cols[ok], weights=wall_sigma0, minlength=rows * cols
        )
        ok = (foot >= 0) & (foot < cols)
        double_bounce = rng.uniform(3.0, 12.0, int(ok.sum()))
        intensity += np.bincount(
            wall_rows[ok] * cols + foot[ok], weights=double_bounce, minlength=rows * cols
        )
    intensity = intensity.reshape(rows, cols).astype(np.float32)

    # system impulse response: resolution ≈ 1.3 pixel spacings (FWHM)
    impulse_sigma_px = 1.3 / 2.355
    intensity = ndimage.gaussian_filter(intensity, sigma=impulse_sigma_px, mode="nearest")
    intensity += np.float32(10 ** (NOISE_EQUIVALENT_SIGMA0_DB / 10))

    # irregular swath edges (start/stop of the valid range window varies along the track)
    r = np.arange(rows)[:, None]
    near_edge = 6 + 10 * (1 + np.sin(2 * math.pi * r / 700.0 + rng.uniform(0, 6.3)))
    far_edge = cols - 6 - 10 * (1 + np.sin(2 * math.pi * r / 900.0 + rng.uniform(0, 6.3)))
    valid = inside & (col_index >= near_edge) & (col_index < far_edge)

    speckled = speckle_intensity(intensity, flight.looks_equivalent_number, rng, impulse_sigma_px)
    amplitude = np.where(valid, np.sqrt(np.maximum(speckled, 1e-12)), AMPLITUDE_NODATA).astype(np.float32)
    idealised = np.where(valid, np.sqrt(intensity), AMPLITUDE_NODATA).astype(np.float32)
    landcover = np.where(valid, landcover, NODATA).astype(np.uint8)
    return SimulatedScene(amplitude=amplitude, idealised_amplitude=idealised, landcover=landcover)
