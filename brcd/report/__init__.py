"""The report of a grid (``brcd report``) and the comparison of two runs' conclusions
(``brcd compare-conclusions``).

Modules, each importing only those above it in this list (and lower ``brcd`` modules):

- :mod:`~brcd.report.format`: text of numbers, intervals, durations and Markdown tables;
- :mod:`~brcd.report.significance`: summaries over seeds, the families of tests with Holm's
  correction and the tied-with-best rule (seeded);
- :mod:`~brcd.report.statements`: the findings as data (``Statement``) and their table;
- :mod:`~brcd.report.grid`: the grid's results in memory, the tables' rows and columns;
- :mod:`~brcd.report.results`: loading and checking the input files
  (those :func:`brcd.workflow.report_inputs` lists);
- :mod:`~brcd.report.families`: the tests of one column, family by family, computed once;
- :mod:`~brcd.report.tables`: the accuracy tables (mAP, Δ, λ, alignment, precision, config hashes);
- :mod:`~brcd.report.speed`: the encoder and search timing tables;
- :mod:`~brcd.report.costs`: time per stage and per method, from Snakemake's benchmark files;
- :mod:`~brcd.report.figures`: the PNG figures;
- :mod:`~brcd.report.findings`: the findings, statement by statement;
- :mod:`~brcd.report.claims`: the paper's claims, checked column by column;
- :mod:`~brcd.report.ranks`: average ranks, Friedman's test and the critical-difference diagram;
- :mod:`~brcd.report.tidy`: the tidy results table (``reports/{name}.parquet``);
- :mod:`~brcd.report.header`: the head of the report (settings, seeds, uncertainty, run time);
- :mod:`~brcd.report.dataset`: the section of one dataset;
- :mod:`~brcd.report.document`: the whole document, ``write_report`` and the ``brcd report`` CLI;
- :mod:`~brcd.report.conclusions`: the ``brcd compare-conclusions`` CLI.

Nothing is imported here, so that importing one module loads only what it needs.
"""
