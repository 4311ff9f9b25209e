import dagster as dg

# One partition per flight of the archive; the new_flights sensor adds them.
flight_partitions = dg.DynamicPartitionsDefinition(name="flight")
