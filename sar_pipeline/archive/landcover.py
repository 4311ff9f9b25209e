"""Land-cover classes: the codes land-cover tiles hold (shared by the simulator, template captions,
sketches and the land-cover source that maps a user's product onto them)."""

NODATA = 0
WATER = 1
FIELD = 2
FOREST = 3
ROAD = 4
URBAN = 5
BUILDING = 6
GRASSLAND = 7
SHRUBLAND = 8
BARE = 9
SNOW = 10
WETLAND = 11

#: class code → name, as written in land-cover tiles (uint8, 0 = nodata); the demo simulates 1–6
LANDCOVER_CLASSES: dict[int, str] = {
    WATER: "water",
    FIELD: "field",
    FOREST: "forest",
    ROAD: "road",
    URBAN: "urban",
    BUILDING: "building",
    GRASSLAND: "grassland",
    SHRUBLAND: "shrubland",
    BARE: "bare",
    SNOW: "snow",
    WETLAND: "wetland",
}

#: class name → code
LANDCOVER_CODES: dict[str, int] = {name: code for code, name in LANDCOVER_CLASSES.items()}

#: ESA WorldCover 10 m (v100/v200) class values → our class names (its legend: Tree cover, Shrubland,
#: Grassland, Cropland, Built-up, Bare / sparse vegetation, Snow and ice, Permanent water bodies,
#: Herbaceous wetland, Mangroves, Moss and lichen)
WORLDCOVER_CLASSES: dict[int, str] = {
    10: "forest",
    20: "shrubland",
    30: "grassland",
    40: "field",
    50: "urban",
    60: "bare",
    70: "snow",
    80: "water",
    90: "wetland",
    95: "wetland",
    100: "grassland",
}
