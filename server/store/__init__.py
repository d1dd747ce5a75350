"""Storage: the ``Repository`` port (``base.py``), the access door (``authorized.py``), the
runner (``runner.py``) and the SQL adapter for SQLite and PostgreSQL (``sql/``, opened by
``sql/opening.py`` in the composition root). Nothing here but ``sql/`` imports the adapter."""
