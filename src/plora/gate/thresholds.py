"""Default gate thresholds, calibrated on a clean cohort by ``plora gate-eval --write-defaults``.

How they were obtained: 32 clean calibration plasmids on plora-tiny (domains
arithmetic, legal, medical, science; configs r4/attention, r8/all;
seeds 101, 102, 103, 104), none of them used in the measured FPR/TPR.
Each threshold = highest calibration score + margin x (highest - median); margins:
weights 0.5, trigger 0.5, clean_delta 0.5. The weights scores of calibration plasmids are leave-one-out robust
z-scores (each against a reference built without it). The trigger score is normalised per measured home domain
(plora/assets/gate/trigger_reference.json), so tau_trigger = 1 + margin by construction. See README, detection quality.
"""

DEFAULT_TAU_TRIGGER = 1.5
DEFAULT_TAU_NORM_Z = 8.27807
DEFAULT_TAU_CLEAN_DELTA = 2.80073
