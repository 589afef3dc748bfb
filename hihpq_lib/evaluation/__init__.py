"""Evaluation: retrieval metrics (``metrics``), float and faiss PQ/OPQ baselines
(``baselines``), statistics over seeds and queries (``stats``), the benchmark tables read
against the paper (``benchmarks``) and the notebooks' claims (``claims``, and
``claim_scan``, which finds the sentences neither generated nor checked)."""
