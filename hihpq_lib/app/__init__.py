"""Applications on top of the library: the pipeline from a dataset to a run (``pipeline``),
the notebooks' experiments (``experiments``), the exercises (``exercises``), the ``hihpq``
command line (``cli``) and its demo (``demo``)."""
