"""Run-time settings (``runtime``), atomic file writes (``atomic``) and optional dependencies
(``optional``): what every other layer may use; this layer imports no other."""
