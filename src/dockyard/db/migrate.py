"""Apply Alembic migrations at start-up (and from `dockyard admin migrate`)."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy import Engine

MIGRATIONS = Path(__file__).parent / "migrations"


def alembic_config(connection) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.attributes["connection"] = connection
    return config


def upgrade(engine: Engine) -> None:
    with engine.connect() as connection:
        command.upgrade(alembic_config(connection), "head")
        connection.commit()


def make_revision(engine: Engine, message: str) -> None:
    """Developer helper: autogenerate a migration from the models."""
    with engine.connect() as connection:
        command.revision(alembic_config(connection), message=message, autogenerate=True)
