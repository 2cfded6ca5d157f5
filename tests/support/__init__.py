"""Test support: fault injection, workspaces for ``pemn compress`` runs, hostile-file checks.

Imported by the tests as ``support.<module>`` (pytest puts ``tests/`` on the import path through the
rootdir ``conftest.py``, the way ``from conftest import ...`` works). Nothing in ``pemn_compress/`` or
``benchmarks/`` imports these modules; ``benchmarks/reliability.py`` runs the campaign entry points
(``python -m support.workspace``, ``python -m support.hostile``) as commands of their own.
"""
