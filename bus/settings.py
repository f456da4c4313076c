"""The one settings base of every Tidzam process."""

from __future__ import annotations

from pydantic import Field
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


class RetentionSettings(TidzamSettings):
    """How long Tidzam keeps what it stores, in one place (``TIDZAM_RETAIN_*``; 0 keeps
    it forever). The bus's streams take theirs at every ``ensure_streams``; the rest is
    removed by ``tidzam_ctl retention`` (and by ``tidzam_ctl check``, which a site runs
    from cron)."""

    retain_audio_h: float = Field(24.0, ge=0.0)  # the AUDIO stream: replays, windows' audio
    retain_audio_gb: float = Field(8.0, ge=0.0)  # ... and at most this much of it
    retain_events_days: float = Field(90.0, ge=0.0)  # EVENTS: predictions, samples, health
    retain_archive_days: float = Field(0.0, ge=0.0)  # archive files (TIDZAM_ARCHIVE_DIR)
    retain_predictions_days: float = Field(0.0, ge=0.0)  # the database's time series
    retain_samples_days: float = Field(0.0, ge=0.0)  # extracted samples nobody reviewed


RETENTION_FIELDS = tuple(RetentionSettings.model_fields)
