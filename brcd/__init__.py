"""BRCD benchmark: distilling unsupervised image-hashing models.

The package is laid out in layers, each importing only from those below it
(``tests/test_layers.py`` states the order and checks it): pure helpers
(``errors``, ``registry``, ``io``, ``stats``, the result ``layout``, the λ
vocabulary ``lambdas``) -> vocabulary (``config``, ``codes``, ``cells``,
``runtime``) -> components (``data``, ``models``, ``hashing``, ``retrieval``,
the ``distill`` losses) -> stages in workflow order (``features`` -> ``train``
-> ``encode`` -> ``cluster`` -> ``tuning`` -> ``distill.train_student`` ->
``evaluate`` -> ``timing``) -> workflow glue (``workflow``, ``checks``) ->
``report`` -> the command line (``cli``). Snakemake rules in
``workflow/rules`` are thin wrappers over the ``brcd`` command line
(``brcd --help``).
"""

__version__ = "0.1.0"
