"""The one settings base of every Tidzam process."""

from __future__ import annotations

from pydantic_settings import BaseSettings, SettingsConfigDict


class TidzamSettings(BaseSettings):
    """What a process reads from its environment, once, at start.

    One subclass per process (the classifier, the projector, ``tidzam_ctl``, ...),
    each field read from ``TIDZAM_<FIELD>``; variables meant for another process
    are ignored, so every process can share one environment. Secrets (passwords,
    URLs with credentials) are ``SecretStr``, never printed or logged. Frozen: a
    process's configuration never changes while it runs; a variant for a test or
    a child process is ``settings.model_copy(update={...})``.
    """

    model_config = SettingsConfigDict(env_prefix="TIDZAM_", extra="ignore", frozen=True)
