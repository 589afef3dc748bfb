"""Learning: the losses (``losses``), the tangent-space Ward hierarchy (``hierarchy``), the
model (``model``), the training views (``views``), the learning-rate schedule
(``schedule``), the trainer (``training``), scoring on features (``retrieval``), a run
folder's files (``checkpoint``), the configuration and its profiles (``config``) and model
diagnostics (``diagnostics``)."""

import hihpq_lib.geometry  # noqa: F401 (first: it silences geoopt's import-time warning)
