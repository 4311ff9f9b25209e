"""Land-cover classes of the demo archive (shared by the simulator, template captions and sketches)."""

NODATA = 0
WATER = 1
FIELD = 2
FOREST = 3
ROAD = 4
URBAN = 5
BUILDING = 6

#: class code → name, as written in land-cover rasters (uint8, 0 = nodata)
LANDCOVER_CLASSES: dict[int, str] = {
    WATER: "water",
    FIELD: "field",
    FOREST: "forest",
    ROAD: "road",
    URBAN: "urban",
    BUILDING: "building",
}
