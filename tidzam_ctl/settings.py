"""The settings of ``tidzam_ctl`` (environment prefix ``TIDZAM_``)."""

from __future__ import annotations

import os
from pathlib import Path

from pydantic import Field, SecretStr, field_validator

from bus.settings import RETENTION_FIELDS, RetentionSettings
from consumers.privacy import PRIVACY_FIELDS, PrivacySettings
from inference.registry import DEFAULT_SELECTOR
from producers.source_policy import SOURCE_POLICY_FIELDS, SourcePolicySettings

REPO_ROOT = Path(__file__).resolve().parents[1]


def default_home() -> Path:
    """Per-user data directory: ``$XDG_DATA_HOME/tidzam`` or ``~/.local/share/tidzam``."""
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "tidzam"


# the site's choices `up` hands to every process and keeps for later commands
SITE_FIELDS = PRIVACY_FIELDS + SOURCE_POLICY_FIELDS + RETENTION_FIELDS


class CtlSettings(PrivacySettings, SourcePolicySettings, RetentionSettings):
    """Where the stack lives and which servers it talks to.

    ``nats_url``/``database_url`` left unset: ``up`` starts embedded servers in
    ``home``. Set them to use external servers instead. The site fields
    (``TIDZAM_PRIVACY``..., ``TIDZAM_SOURCE_*``, ``TIDZAM_RETAIN_*``) are handed to
    every process of the stack and kept by ``up`` for later commands (``check``
    restarts a process with them).
    """

    home: Path = Field(default_factory=default_home)
    nats_url: SecretStr | None = None
    database_url: SecretStr | None = None
    # an external database (docker-compose): the passwords `init` gives the projector's
    # and the readers' roles (the embedded one generates its own)
    db_projector_password: SecretStr | None = None
    db_reader_password: SecretStr | None = None
    model_dir: Path = DEFAULT_SELECTOR
    sample_rate: int = 48_000
    chunk_s: float = Field(1.0, gt=0.05, le=10.0)
    # ``replay --speed max``: nobody waits on a chunk, so longer chunks carry the same audio
    # in half the messages (a paced replay is live-like and uses ``chunk_s``)
    replay_chunk_s: float = Field(2.0, gt=0.05, le=10.0)

    def replay_chunk(self, speed: float | None) -> float:
        """The chunk length of a replay at ``speed`` (None: as fast as the bus takes)."""
        return self.replay_chunk_s if speed is None else self.chunk_s
    overlap: float = Field(0.25, ge=0.0, lt=1.0)
    classifiers: int = Field(1, ge=0, le=32)
    # One projector and one source manager per bus: extra machines run classifiers only.
    projector: bool = True
    sources: bool = True
    live: bool = True  # phone/browser streams (their socket.io is the gateway's)
    icecast: bool = False  # an Icecast server with every channel as a mono stream
    jack: bool = False  # jackd with the dummy driver, for --jack sources
    jack_rate: int = 48_000
    jack_period: int = Field(1024, ge=16, le=65536)
    jack_port_max: int = Field(2048, ge=16)
    jack_timeout_ms: int = Field(50_000, ge=100)
    archive_dir: Path | None = None  # set: the archiver writes live audio into hour files
    extractor: bool = True  # the sample extractor (extracts nothing until a rule says so)
    gain_control: bool = True  # the gain controller: noisy, clipping, dead channels
    samples_dir: Path | None = None  # extracted samples; default <home>/samples
    icecast_host: str = "127.0.0.1"
    gateway: bool = True  # socket.io (the original's API) + REST, from the projections
    gateway_host: str = "127.0.0.1"
    gateway_port: int | None = Field(None, ge=1, le=65535)  # None: a free port, kept
    gateway_public_read: bool = True  # live data and history without a token
    gateway_cors: str = ""  # comma-separated browser origins allowed (none by default)

    @field_validator("model_dir", "archive_dir", "samples_dir")
    @classmethod
    def _absolute(cls, value: Path | None) -> Path | None:
        """Absolute: the stack's processes do not run in the caller's directory."""
        return value.expanduser().resolve() if value is not None else None

    @property
    def samples_root(self) -> Path:
        """Where the extractor writes samples and ``samples`` commands read them."""
        return self.samples_dir or self.home.expanduser().absolute() / "samples"
