"""Geometry: the Lorentz model of hyperbolic space (``lorentz``) and product spaces of
hyperboloids or Euclidean factors (``manifolds``), on top of geoopt."""

import warnings as _warnings

with _warnings.catch_warnings():
    # geoopt compiles three helpers with torch.jit.script when imported; torch >= 2.10
    # deprecates that with a FutureWarning printed at every start of the CLI, a notebook or
    # a script. None of those helpers is used here, so the message only confuses readers.
    _warnings.filterwarnings(
        "ignore", message="`torch.jit.script` is deprecated", category=FutureWarning
    )
    import geoopt as _geoopt  # noqa: F401
