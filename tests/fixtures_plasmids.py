"""Session-scoped trained plasmids shared by the whole suite (owned by the training module's tests)."""
