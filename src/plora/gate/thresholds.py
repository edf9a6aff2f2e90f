"""Default gate thresholds, calibrated on a clean cohort by ``plora gate-eval --write-defaults``.

How they were obtained: 16 clean calibration plasmids on plora-tiny (domains
arithmetic, legal, medical, science; configs r4/attention, r8/all;
seeds 101, 102), none of them used in the measured FPR/TPR.
Each threshold = highest calibration score + margin x (highest - median); margins:
weights 0.5, trigger 0.25, clean_delta 0.5. The weights scores of calibration plasmids are leave-one-out robust
z-scores (each against a reference built without it). See README, detection quality.
"""

DEFAULT_TAU_TRIGGER = 0.458086
DEFAULT_TAU_NORM_Z = 58.5229
DEFAULT_TAU_CLEAN_DELTA = 0.57708
