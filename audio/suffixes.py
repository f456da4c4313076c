"""The one set of audio file suffixes Tidzam opens (anything FFmpeg decodes that
microphones and archives are commonly stored as)."""

from __future__ import annotations

from pathlib import Path

AUDIO_SUFFIXES = frozenset({".wav", ".flac", ".ogg", ".oga", ".opus", ".mp3", ".m4a", ".aac",
                            ".aif", ".aiff", ".wma", ".webm", ".mka"})


def is_audio(path: str | Path) -> bool:
    """Whether ``path``'s suffix is one of ``AUDIO_SUFFIXES`` (any case)."""
    return Path(path).suffix.lower() in AUDIO_SUFFIXES
