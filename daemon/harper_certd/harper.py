"""Harper integration (hot reload, Operations API, CLI, systemd; verification of what is served)."""

from __future__ import annotations

from harper_certd import discover
from harper_certd.config import Config
from harper_certd.errors import ConfigError
from harper_certd.restart import Applier
from harper_certd.swap import Store


def harper_applier(config: Config, harper: discover.HarperConfig, store: Store) -> Applier:
    raise ConfigError(f"restart.method {config.restart.method} is not available yet")
