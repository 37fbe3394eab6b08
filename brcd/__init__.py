"""BRCD benchmark: distilling unsupervised image-hashing models.

The package is laid out by workflow stage: ``data`` -> ``features`` -> ``train``
-> ``encode`` -> ``cluster`` -> ``distill`` -> ``evaluate`` -> ``timing`` ->
``report``. Snakemake rules in ``workflow/rules`` are thin wrappers over the
``brcd`` command line (``brcd --help``).
"""

__version__ = "0.1.0"
