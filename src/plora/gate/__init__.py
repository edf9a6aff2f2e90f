"""The security gate: policy, ordered checks with stable reason codes, weight anomaly and behavioural probes."""
