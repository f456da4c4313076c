"""Streaming audio decoding: any format FFmpeg reads (through PyAV), resampled.

This is the one decoder: the producers stream files and URLs through it, and
training reads whole files through it. Output blocks are float32, shape
(channels, n), in [-1, 1], at the requested rate; every channel of a
multi-channel file is kept.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import av
import av.error
import numpy as np
import numpy.typing as npt

from audio.blocks import Block
from bus_schemas import pcm
from bus_schemas.errors import TidzamError

log = logging.getLogger(__name__)

F32 = npt.NDArray[np.float32]
I16 = npt.NDArray[np.int16]
_S = TypeVar("_S", bound=np.generic)
QUICK_PROBE = 256 * 1024  # bytes a local file is probed on first (``AudioStream._open``)
MAX_CHANNELS = 64  # libswresample's limit (SWR_CH_MAX)
# Packets the decoder may reject in a row before the stream is garbage, not a scratch.
MAX_BAD_PACKETS_IN_ROW = 50
_LOGGED_SKIPS = 5  # per stream: a scratchy file warns a few times, then sums up at the end


class AudioDecodeError(TidzamError, RuntimeError):
    """A file or URL that is not audio we can decode; the message says which and why."""

    def __init__(self, location: str, reason: str) -> None:
        super().__init__(f"cannot decode {location}: {reason}")
        self.location = location
        self.reason = reason

    @property
    def path(self) -> str:
        return self.location


@dataclass(frozen=True)
class StreamInfo:
    channels: int
    original_rate: int
    codec: str
    duration_s: float | None


class AudioStream:
    """Open ``location`` (path or URL) and iterate resampled float32 blocks.

    ``with AudioStream(path, 48_000) as s: for block in s.blocks(): ...`` where
    each block has shape (s.info.channels, n).
    """

    def __init__(self, location: str | Path, sample_rate: int, *,
                 timeout_s: float = 15.0) -> None:
        self.location = str(location)
        self.sample_rate = sample_rate
        self.skipped_packets = 0
        """Packets the decoder rejected and that were skipped, as ``ffmpeg`` skips them."""
        self._seek_to: float | None = None
        try:
            self._container = self._open(timeout_s)
        except FileNotFoundError:
            raise AudioDecodeError(self.location, "no such file") from None
        except (av.error.FFmpegError, OSError) as exc:
            raise AudioDecodeError(
                self.location, f"not a recognised audio file or stream ({_reason(exc)})"
            ) from None
        if not self._container.streams.audio:
            self._container.close()
            raise AudioDecodeError(self.location, "no audio stream in it")
        self._stream = self._container.streams.audio[0]
        codec = self._stream.codec_context
        duration = (float(self._stream.duration * self._stream.time_base)
                    if self._stream.duration and self._stream.time_base else None)
        self.info = StreamInfo(channels=codec.channels, original_rate=codec.sample_rate or 0,
                               codec=codec.name, duration_s=duration)
        if self.info.original_rate <= 0:
            self._container.close()
            raise AudioDecodeError(self.location, "the audio stream declares no sample rate")
        if self.info.channels > MAX_CHANNELS:
            self._container.close()
            raise AudioDecodeError(self.location, f"{self.info.channels} channels: FFmpeg's "
                                   f"resampler takes at most {MAX_CHANNELS} per stream")
        if self.info.channels < 1:
            raise AudioDecodeError(self.location, "the audio stream has no channels")

    def _open(self, timeout_s: float) -> av.container.InputContainer:
        """FFmpeg reads up to 5 MB to learn a stream's parameters: 0.3 s for a
        32-channel WAV, whose header says them all. A local file is probed on
        ``QUICK_PROBE`` bytes first, and opened again with FFmpeg's defaults if that
        did not give its audio's rate and channels (a URL keeps the defaults)."""
        # Tags are not ours to judge: a Latin-1 "(c)" must not make the audio unreadable.
        if "://" not in self.location:
            quick = av.open(self.location, timeout=timeout_s, metadata_errors="replace",
                            options={"probesize": str(QUICK_PROBE)})
            audio = quick.streams.audio
            if audio and audio[0].codec_context.sample_rate and audio[0].codec_context.channels:
                return quick
            quick.close()
        return av.open(self.location, timeout=timeout_s, metadata_errors="replace")

    def __enter__(self) -> AudioStream:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._container.close()

    def seek(self, seconds: float) -> None:
        """Start the blocks exactly ``seconds`` into the stream (call before ``blocks``).

        FFmpeg seeks to a packet at or before the time; the samples decoded before it
        are dropped using the first frame's timestamp, so the first block starts at
        ``seconds`` to the sample (within the codec's own timestamp precision).
        """
        if seconds > 0:
            self._container.seek(int(seconds * 1_000_000), any_frame=False)
            self._seek_to = seconds

    def _layout(self) -> av.AudioLayout:
        """The stream's channel layout, or a plain channel count when FFmpeg has none
        that matches (many-channel Opus, odd WAVs)."""
        layout = self._stream.codec_context.layout
        if layout is not None and layout.nb_channels == self.info.channels:
            return layout
        return av.AudioLayout(f"{self.info.channels} channels")

    def blocks(self) -> Iterator[Block]:
        """The stream's audio in order: blocks of float32 (channels, n) at ``sample_rate``."""
        for samples in self._converted("flt"):
            yield Block(planar(samples, self.info.channels), self.sample_rate)

    def pcm16_blocks(self) -> Iterator[I16]:
        """The stream's audio as int16 PCM (channels, n) at ``sample_rate``: the samples
        ``pcm.to_int16`` makes of ``blocks()``, for what publishes PCM16 chunks.

        At the stream's own rate FFmpeg converts to s16 itself (the same rounding and
        clipping, without a float copy in Python); a resampled stream is resampled in
        float, as ``blocks()`` is, and then converted.
        """
        channels = self.info.channels
        if self.info.original_rate != self.sample_rate:
            for block in self.blocks():
                yield pcm.to_int16(block.samples)
            return
        for samples in self._converted("s16"):
            yield deinterleave(np.asarray(samples, dtype=np.int16), channels)

    def _converted(self, sample_format: str) -> Iterator[npt.NDArray[np.generic]]:
        """Packed frames (1, n * channels) in ``sample_format`` at ``sample_rate``,
        the samples before a seek's target dropped."""
        channels = self.info.channels
        # Packed (interleaved), not planar: PyAV's planar to_ndarray crashes
        # the interpreter with 8 or more channels; one plane is safe at any count.
        resampler = av.AudioResampler(format=sample_format, layout=self._layout(),
                                      rate=self.sample_rate)
        skip: int | None = None if self._seek_to is not None else 0
        try:
            for frame in self._frames():
                if skip is None:  # the first frame after a seek: how far before it we are
                    skip = self._samples_before_seek(frame)
                for out in resampler.resample(frame):
                    packed, skip = _trimmed(out.to_ndarray(), channels, skip)
                    if packed.size:
                        yield packed
            for out in resampler.resample(None):
                packed, skip = _trimmed(out.to_ndarray(), channels, skip or 0)
                if packed.size:
                    yield packed
        except av.error.FFmpegError as exc:
            raise AudioDecodeError(self.location, _reason(exc)) from None

    def _frames(self) -> Iterator[av.AudioFrame]:
        """The stream's decoded frames in order, packet by packet.

        A packet the decoder rejects is logged, counted in ``skipped_packets`` and
        skipped, as ``ffmpeg`` does ("Error while decoding stream"): one bad packet
        costs its few milliseconds, not the file. ``AudioDecodeError`` when the demuxer
        fails, when ``MAX_BAD_PACKETS_IN_ROW`` packets in a row fail, or when packets
        failed and none decoded.
        """
        packets = self._container.demux(self._stream)
        in_row, decoded, reason = 0, False, ""
        while True:
            try:
                packet = next(packets, None)
            except av.error.FFmpegError as exc:
                raise AudioDecodeError(self.location,
                                       f"reading the file failed ({_reason(exc)})") from None
            if packet is None:
                break
            try:
                frames = packet.decode()
            except av.error.FFmpegError as exc:
                in_row, reason = in_row + 1, _reason(exc)
                self._skipped(packet, reason)
                if in_row >= MAX_BAD_PACKETS_IN_ROW:
                    raise AudioDecodeError(self.location, f"{in_row} packets in a row could "
                                           f"not be decoded ({reason})") from None
                continue
            in_row = 0
            decoded = decoded or bool(frames)
            yield from frames
        if self.skipped_packets and not decoded:
            raise AudioDecodeError(self.location, f"no packet could be decoded ({reason})")
        if self.skipped_packets > _LOGGED_SKIPS:
            log.warning("%s: %d undecodable packets skipped in all", self.location,
                        self.skipped_packets)

    def _skipped(self, packet: av.Packet[av.audio.AudioStream], reason: str) -> None:
        self.skipped_packets += 1
        if self.skipped_packets > _LOGGED_SKIPS:
            return
        pts = packet.pts if packet.pts is not None else packet.dts
        at = (f"{float((pts - (self._stream.start_time or 0)) * packet.time_base):.3f} s"
              if pts is not None and packet.time_base is not None else "an unknown time")
        log.warning("%s: skipped a packet at %s the decoder rejected (%s)%s", self.location,
                    at, reason, "; further ones are not logged"
                    if self.skipped_packets == _LOGGED_SKIPS else "")

    def _samples_before_seek(self, frame: av.AudioFrame) -> int:
        if frame.pts is None or frame.time_base is None or self._seek_to is None:
            return 0
        # Timestamps count from the stream's start time (Opus: its pre-skip), not 0.
        start = float((frame.pts - (self._stream.start_time or 0)) * frame.time_base)
        return max(0, round((self._seek_to - start) * self.sample_rate))


def _trimmed(packed: npt.NDArray[np.generic], channels: int,
             skip: int | None) -> tuple[npt.NDArray[np.generic], int]:
    """Drop the first ``skip`` samples of the stream from a packed frame (1, n * channels);
    (rest, still to skip)."""
    if not skip:
        return packed, 0
    taken = min(skip, packed.shape[-1] // channels)
    return packed[..., taken * channels:], skip - taken


def planar(array: npt.NDArray[np.generic], channels: int) -> F32:
    """A packed frame (1, n * channels) as float32 (channels, n)."""
    return deinterleave(np.asarray(array, dtype=np.float32), channels)


_TILE = 256  # frames per tile: a tile's rows and columns both stay in L1


def deinterleave(packed: npt.NDArray[_S], channels: int) -> npt.NDArray[_S]:
    """Packed samples (n * channels, any leading shape of 1) as (channels, n), contiguous.

    Transposed tile by tile: numpy's one-shot transpose of a tall, narrow array
    walks memory with a stride of ``channels`` samples and is ~5x slower.
    """
    frames = packed.reshape(-1, channels)
    if channels == 1:
        return frames.reshape(1, -1)
    out = np.empty((channels, frames.shape[0]), dtype=frames.dtype)
    for i in range(0, frames.shape[0], _TILE):
        out[:, i:i + _TILE] = frames[i:i + _TILE].T
    return out


def _reason(exc: BaseException) -> str:
    """FFmpeg's words, without PyAV's errno and the file name it appends."""
    text = str(exc) or type(exc).__name__
    return re.sub(r"^\[Errno -?\d+\]\s*|\s*:\s*'[^']*'$", "", text)


def decode_all(location: str | Path, sample_rate: int) -> tuple[F32, StreamInfo]:
    """The whole file: float32 (channels, n) at ``sample_rate``, and its stream info."""
    with AudioStream(location, sample_rate) as stream:
        blocks = [b.samples for b in stream.blocks()]
        if not blocks:
            raise AudioDecodeError(str(location), "no audio samples in it")
        return np.concatenate(blocks, axis=1), stream.info


def decode_file(path: str | Path, sample_rate: int = 48_000) -> tuple[F32, int]:
    """The whole file as float32 (channels, n) at ``sample_rate``, and its own rate in Hz."""
    if sample_rate <= 0:
        raise ValueError(f"sample_rate must be positive, got {sample_rate}")
    audio, info = decode_all(path, sample_rate)
    return audio, info.original_rate
