"""Playing a sound with an external player (ffplay, aplay, paplay), or writing it as
a WAV where there is none.

Audio: float32 (n,) or (channels, n) in [-1, 1], at the rate given with it.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
import wave
from collections.abc import Callable, Sequence
from pathlib import Path

from bus_schemas import pcm
from inference.features import F32


def write_wav(path: Path, audio: F32, rate: int) -> Path:
    """A 16-bit PCM WAV of ``audio`` (n,) or (channels, n), float in [-1, 1]."""
    frames = audio[None, :] if audio.ndim == 1 else audio
    samples = pcm.to_int16(frames.T).astype("<i2")
    with wave.open(str(path), "wb") as out:
        out.setnchannels(frames.shape[0])
        out.setsampwidth(2)
        out.setframerate(rate)
        out.writeframes(samples.tobytes())
    return path


PLAYERS: tuple[tuple[str, ...], ...] = (
    ("ffplay", "-nodisp", "-autoexit", "-loglevel", "quiet"),
    ("aplay", "-q"),
    ("paplay",),
)


def find_player(which: Callable[[str], str | None] = shutil.which) -> tuple[str, ...] | None:
    """The first audio player on the PATH (ffplay, aplay, paplay): its command without
    the file, or None."""
    for command in PLAYERS:
        if which(command[0]):
            return command
    return None


class Player:
    """Plays audio with an external player, one sound at a time.

    Each sound is written to a WAV in ``folder`` (default: a private temporary
    folder) first; without a player (or when it cannot start) that file is the
    answer: its path is shown. A temporary folder is removed by ``close`` only when
    a player played its files.
    """

    def __init__(self, command: Sequence[str] | None, folder: Path | None = None) -> None:
        self.command = tuple(command) if command else None
        self.process: subprocess.Popen[bytes] | None = None
        self._folder = folder
        self._temporary = folder is None
        self._count = 0

    @property
    def folder(self) -> Path:
        """Where the sounds are written (a temporary one is made when first asked for)."""
        if self._folder is None:
            self._folder = Path(tempfile.mkdtemp(prefix="tidzam-play-"))
        return self._folder

    def play(self, audio: F32, rate: int, *, wait: bool = False) -> str:
        """Play ``audio`` (n,) or (channels, n) at ``rate``; a one-line outcome."""
        self.stop()
        self._count += 1
        self.folder.mkdir(parents=True, exist_ok=True)
        path = write_wav(self.folder / f"sound-{self._count:04d}.wav", audio, rate)
        if self.command is None:
            return f"no audio player (ffplay, aplay, paplay) found: wrote {path}"
        try:
            self.process = subprocess.Popen([*self.command, str(path)], stdin=subprocess.DEVNULL,
                                            stdout=subprocess.DEVNULL,
                                            stderr=subprocess.DEVNULL)
        except OSError as exc:
            return f"cannot start {self.command[0]} ({exc}): wrote {path}"
        if wait:
            self.process.wait()
        return f"playing with {self.command[0]}"

    def stop(self) -> None:
        """Stop the sound being played, if any."""
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait()
        self.process = None

    def close(self) -> None:
        self.stop()
        if self.command is not None and self._temporary and self._folder is not None:
            shutil.rmtree(self._folder, ignore_errors=True)
