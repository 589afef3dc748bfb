"""Applications on top of the library: a run's data and splits (``datasets``), its inputs
in one of three modes chosen once (``prepare``: frozen bank, trained tail, online), scoring a
run one way (``scoring``), the pipeline from a config to a run folder (``pipeline``), the
notebooks' experiments (``experiments``), the exercises (``exercises``), the ``hihpq``
command line (``cli``) and its demo (``demo``)."""
