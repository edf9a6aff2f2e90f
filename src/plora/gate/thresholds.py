"""Default gate thresholds, calibrated on a clean cohort by `plora gate-eval` (see README: detection quality).

Placeholders until calibration lands.
"""

DEFAULT_TAU_TRIGGER = 1.0
DEFAULT_TAU_NORM_Z = 6.0
DEFAULT_TAU_CLEAN_DELTA = 1.0
