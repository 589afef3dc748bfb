"""Run-time settings (``runtime``), atomic file writes (``atomic``), optional dependencies
(``optional``), the one tensor-to-numpy door (``arrays``) and stage timing (``timing``):
what every other layer may use; this layer imports no other."""
