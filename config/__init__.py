"""assetq configuration: one pydantic-settings class, env prefix ``ASSETQ_``."""

from config.settings import Settings, get_settings

__all__ = ["Settings", "get_settings"]
