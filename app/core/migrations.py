"""Run the Alembic migrations programmatically (`spectra migrate`, tests, the embedded server)."""

from __future__ import annotations

from alembic import command
from alembic.config import Config

from app.core.config import REPO_ROOT
from app.core.db import normalize_url


def alembic_config(database_url: str) -> Config:
    ini = REPO_ROOT / "alembic.ini"
    if not ini.is_file():
        raise FileNotFoundError(f"{ini} is missing; run migrations from a Spectra checkout")
    config = Config(str(ini))
    config.set_main_option("script_location", str(REPO_ROOT / "alembic"))
    config.attributes["url"] = normalize_url(database_url)
    config.attributes["configure_logging"] = False
    return config


def upgrade_head(database_url: str) -> None:
    """Create or upgrade the schema to the newest revision (idempotent)."""
    command.upgrade(alembic_config(database_url), "head")
