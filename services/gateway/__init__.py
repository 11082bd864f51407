"""The CCSDS gateway: what ground receives, as Space Packets for a mission control system."""
