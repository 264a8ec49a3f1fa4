"""warden: facilities and safety-patrol monitoring.

This package is the shared kernel: the event schema, configuration models, MQTT topic
tree, clocks and the command line. `agent`, `gateway`, `rules` and `simulators` build on it.
"""

__version__ = "0.1.0"
