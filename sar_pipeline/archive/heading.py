"""The platform heading of a scene from what catalogues record, when they record no heading itself.

The tiler needs the heading (direction of flight) and the look side to put range along columns and
azimuth down the rows. STAC has no heading field; catalogues give one of:

* the project's own ``sar_pipeline:heading_deg`` (degrees clockwise from the scene CRS's grid north);
* ``view:azimuth``: "the angle measured from the sub-satellite point (point on the ground below the
  platform) between the scene center and true north", i.e. the bearing of the look direction; the
  heading is 90° less for a right-looking sensor, 90° more for a left-looking one;
* ``sat:orbit_state`` (``ascending``/``descending``) of a spaceborne SAR: the ground track's bearing
  follows from the orbit's inclination and the scene latitude (:func:`heading_from_orbit_state`).

Bearings from STAC are true-north bearings; :func:`true_to_grid_bearing` turns them into bearings
from the grid north of a projected scene CRS (the two differ by the meridian convergence, < 3° inside
a UTM zone).
"""

from __future__ import annotations

import math

from pyproj import CRS, Geod, Transformer

#: Inclination of the sun-synchronous low Earth orbits of spaceborne SAR (Sentinel-1 98.18°,
#: RADARSAT-2 98.6°, TerraSAR-X 97.4°): a 1° error in it moves the heading by less than 0.2°
SUN_SYNCHRONOUS_INCLINATION_DEG = 98.2
#: revolutions of such an orbit per day (Sentinel-1: 175 orbits in 12 days); sets how much the Earth
#: turns under the track (~4° of heading at mid-latitudes)
REVOLUTIONS_PER_DAY = 14.6

_WGS84 = Geod(ellps="WGS84")


def heading_from_look_azimuth(look_azimuth_deg: float, observation_direction: str | None) -> float | None:
    """Platform heading (degrees clockwise from north, [0, 360)) from the bearing of the look direction.

    ``observation_direction`` is ``"left"`` or ``"right"``; None when it is unknown (the bearing alone
    cannot tell the heading).
    """
    look = (observation_direction or "").lower()
    if look not in ("left", "right") or not math.isfinite(look_azimuth_deg):
        return None
    return (look_azimuth_deg + (-90.0 if look == "right" else 90.0)) % 360.0


def heading_from_orbit_state(
    orbit_state: str | None,
    latitude_deg: float,
    inclination_deg: float = SUN_SYNCHRONOUS_INCLINATION_DEG,
    revolutions_per_day: float = REVOLUTIONS_PER_DAY,
) -> float | None:
    """Bearing (degrees clockwise from true north) of a circular orbit's ground track at ``latitude_deg``.

    The inertial track crosses latitude φ at azimuth α with ``sin α = cos i / cos φ`` (north-going when
    ascending, south-going when descending); the Earth turning east under it adds
    ``−cos φ / revolutions_per_day`` to the eastward ground speed (in units of the orbital speed).
    Sentinel-1 at 45° N: 345.7° ascending, 194.3° descending (its annotated platform headings are within
    about 2° of these). None for an unknown state or a latitude the orbit never reaches.
    """
    state = (orbit_state or "").lower()
    if state not in ("ascending", "descending") or not math.isfinite(latitude_deg):
        return None
    cos_lat = math.cos(math.radians(latitude_deg))
    sin_alpha = math.cos(math.radians(inclination_deg)) / cos_lat if cos_lat > 0 else math.inf
    if abs(sin_alpha) > 1:
        return None
    cos_alpha = math.sqrt(1 - sin_alpha**2) * (1 if state == "ascending" else -1)
    east = sin_alpha - cos_lat / revolutions_per_day
    return math.degrees(math.atan2(east, cos_alpha)) % 360.0


def true_to_grid_bearing(bearing_deg: float, crs: str, x: float, y: float) -> float:
    """A true-north bearing at map point (x, y) of ``crs`` as a bearing from that CRS's grid north.

    A geographic CRS's grid north is true north (bearing unchanged). For a projected CRS the bearing
    is followed 1 m on the ellipsoid and the two points compared in the CRS.
    """
    c = CRS.from_user_input(crs)
    if not c.is_projected:
        return bearing_deg % 360.0
    to_lonlat = Transformer.from_crs(c, "EPSG:4326", always_xy=True)
    to_map = Transformer.from_crs("EPSG:4326", c, always_xy=True)
    lon, lat = to_lonlat.transform(x, y)
    lon2, lat2, _ = _WGS84.fwd(lon, lat, bearing_deg, 1.0)  # short: the grid bearing at the point itself
    x2, y2 = to_map.transform(lon2, lat2)
    return math.degrees(math.atan2(x2 - x, y2 - y)) % 360.0
