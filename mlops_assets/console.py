"""The ``mlops`` console script.

Importing the definitions builds them, and building them emits Dagster's notices about
beta and preview features this project relies on; the filters are set before that import, so the
command's output holds only what it has to say.
"""

from __future__ import annotations

import logging
import warnings


def run() -> None:
    warnings.filterwarnings("ignore", message=r".* is currently in (beta|preview)")
    warnings.filterwarnings("ignore", message="Hint: Inferred schema contains integer column", category=UserWarning)
    # MLflow announces every schema check of its SQLite store at INFO.
    logging.getLogger("mlflow.store.db.utils").setLevel(logging.WARNING)
    logging.getLogger("alembic").setLevel(logging.WARNING)

    from mlops_assets.cli import main

    main()


if __name__ == "__main__":
    run()
