"""Names the vehicle core still imports from here.

The modelled comms live in :mod:`services.kernel.recorder` (the on-board
recorder), :mod:`services.kernel.radio` (its step), :mod:`services.kernel.archive`
(ground's frame archive), :mod:`services.kernel.telecommand` (ground's command
routing) and :mod:`services.kernel.linkmetrics`; import from those. This module
goes once its last importer does.
"""

from services.kernel.radio import run_downlink
from services.kernel.recorder import Downlink

__all__ = ["Downlink", "run_downlink"]
