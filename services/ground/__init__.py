"""Ground: the clock authority, the flight plan, telecommands, stations, archive."""
