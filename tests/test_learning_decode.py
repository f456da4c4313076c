"""audio.decode.decode_file: whole-file decoding to float32 planar at 48 kHz."""

from __future__ import annotations

import wave
from pathlib import Path

import av
import numpy as np
import pytest

from audio.decode import AudioDecodeError, AudioStream, decode_all, decode_file


def _tones(rate: int, seconds: float, freqs: tuple[float, ...]) -> np.ndarray:
    t = np.arange(int(rate * seconds)) / rate
    return np.stack([0.5 * np.sin(2 * np.pi * f * t) for f in freqs]).astype(np.float32)


def _peak_hz(signal: np.ndarray, rate: int) -> float:
    spectrum = np.abs(np.fft.rfft(signal))
    return float(np.fft.rfftfreq(signal.shape[0], 1 / rate)[int(np.argmax(spectrum))])


def _write_wav(path: Path, data: np.ndarray, rate: int) -> Path:
    pcm = (np.clip(data.T, -1, 1) * 32767).astype("<i2")
    with wave.open(str(path), "wb") as out:
        out.setnchannels(data.shape[0])
        out.setsampwidth(2)
        out.setframerate(rate)
        out.writeframes(pcm.tobytes())
    return path


def _write_ogg_vorbis(path: Path, data: np.ndarray, rate: int) -> Path:
    with av.open(str(path), "w", format="ogg") as out:
        stream = out.add_stream("vorbis", rate=rate, options={"strict": "experimental"})
        stream.layout = "stereo"
        frame = av.AudioFrame.from_ndarray(data, format="fltp", layout="stereo")
        frame.sample_rate = rate
        frame.pts = 0
        for packet in stream.encode(frame):
            out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)
    return path


def test_wav_stereo_is_resampled_to_48k_planar(tmp_path: Path) -> None:
    path = _write_wav(tmp_path / "tones.wav", _tones(22_050, 1.0, (1000.0, 3000.0)), 22_050)
    audio, rate = decode_file(path)
    assert rate == 22_050
    assert audio.dtype == np.float32
    assert audio.shape[0] == 2
    assert abs(audio.shape[1] - 48_000) <= 64
    assert _peak_hz(audio[0], 48_000) == pytest.approx(1000.0, abs=2.0)
    assert _peak_hz(audio[1], 48_000) == pytest.approx(3000.0, abs=2.0)
    assert 0.3 < float(np.abs(audio).max()) <= 0.55


def test_ogg_vorbis_decodes(tmp_path: Path) -> None:
    path = _write_ogg_vorbis(tmp_path / "tones.ogg", _tones(44_100, 1.0, (500.0, 2000.0)),
                             44_100)
    audio, rate = decode_file(path, sample_rate=16_000)
    assert rate == 44_100
    assert audio.shape[0] == 2
    assert abs(audio.shape[1] - 16_000) < 400
    assert _peak_hz(audio[1], 16_000) == pytest.approx(2000.0, abs=3.0)


def test_corrupt_file_raises_audio_decode_error(tmp_path: Path) -> None:
    bad = tmp_path / "broken.ogg"
    bad.write_bytes(b"OggS" + bytes(range(256)) * 8)
    with pytest.raises(AudioDecodeError) as info:
        decode_file(bad)
    assert info.value.path == str(bad)
    assert "broken.ogg" in str(info.value)


def test_text_file_and_missing_file_raise(tmp_path: Path) -> None:
    text = tmp_path / "notes.wav"
    text.write_text("this is not audio\n" * 50)
    with pytest.raises(AudioDecodeError):
        decode_file(text)
    with pytest.raises(AudioDecodeError, match=r"(?i)no such file"):
        decode_file(tmp_path / "absent.wav")


@pytest.mark.parametrize(("ext", "codec", "exact"), [("wav", None, True), ("flac", "flac", True),
                                                    ("opus", "libopus", False)])
def test_seek_starts_at_the_sample(tmp_path: Path, ext: str, codec: str | None,
                                   exact: bool) -> None:
    """Archives are played from a date: the first block after a seek starts exactly there."""
    from tests.audio_files import write_wav

    source = write_wav(tmp_path / "src.wav", seconds=6.0, channels=2, seed=3)
    path = source
    if codec is not None:
        path = tmp_path / f"coded.{ext}"
        with av.open(str(source)) as inp, av.open(str(path), "w") as out:
            enc = out.add_stream(codec, rate=48_000, layout="stereo")
            assert isinstance(enc, av.audio.stream.AudioStream)
            for frame in inp.decode(audio=0):
                frame.pts = None
                for packet in enc.encode(frame):
                    out.mux(packet)
            for packet in enc.encode(None):
                out.mux(packet)
    whole, _ = decode_all(path, 48_000)
    at = 2.3457
    with AudioStream(path, 48_000) as decoder:
        decoder.seek(at)
        got = np.concatenate([b.samples for b in decoder.blocks()], axis=1)
    start = round(at * 48_000)
    assert abs(got.shape[1] - (whole.shape[1] - start)) <= (0 if exact else 960)
    head, expected = got[:, :24_000], whole[:, start:start + 24_000]
    if exact:
        assert np.abs(head - expected).max() < 1e-4
    else:  # lossy: the decoder restarts after a seek, so compare the alignment
        corr = [float(np.dot(head[0, 4800:], whole[0, start + 4800 + lag:start + 24_000 + lag]))
                for lag in range(-480, 481)]
        assert int(np.argmax(corr)) - 480 == 0, "the first block is not at the seek time"


@pytest.mark.parametrize(("rate", "codec"), [(48_000, None), (22_050, None),
                                             (48_000, "libopus")])
@pytest.mark.parametrize("seek", [0.0, 1.2345])
def test_pcm16_blocks_are_the_float_blocks_as_int16(tmp_path: Path, rate: int,
                                                    codec: str | None, seek: float) -> None:
    """What the producers publish (PCM16 straight from FFmpeg at the stream's rate,
    converted after a float resample otherwise) is exactly pcm.to_int16 of the float
    blocks, sample for sample, with 12 channels and after a seek."""
    from bus_schemas import pcm
    from tests.audio_files import write_wav

    path = write_wav(tmp_path / "src.wav", seconds=3.0, channels=2 if codec else 12, seed=5,
                     rate=rate)
    if codec is not None:  # a float decoder (Opus): FFmpeg's own float → s16 rounding
        coded = tmp_path / "coded.opus"
        with av.open(str(path)) as inp, av.open(str(coded), "w") as out:
            enc = out.add_stream(codec, rate=48_000, layout="stereo")
            assert isinstance(enc, av.audio.stream.AudioStream)
            for frame in inp.decode(audio=0):
                frame.pts = None
                for packet in enc.encode(frame):
                    out.mux(packet)
            for packet in enc.encode(None):
                out.mux(packet)
        path = coded

    def both(method: str) -> np.ndarray:
        with AudioStream(path, 48_000) as decoder:
            decoder.seek(seek)
            if method == "float":
                return pcm.to_int16(np.concatenate([b.samples for b in decoder.blocks()],
                                                   axis=1))
            blocks = list(decoder.pcm16_blocks())
        assert all(b.dtype == np.int16 for b in blocks)
        return np.concatenate(blocks, axis=1)

    expected, got = both("float"), both("pcm16")
    assert got.shape == expected.shape and got.shape[1] > 0
    assert np.array_equal(got, expected)


@pytest.mark.parametrize(("frames", "channels"), [(0, 3), (1, 32), (255, 2), (1000, 32),
                                                  (513, 1)])
def test_deinterleave_is_the_transpose(frames: int, channels: int) -> None:
    from audio.decode import deinterleave

    packed = np.arange(frames * channels, dtype=np.int16).reshape(1, -1)
    got = deinterleave(packed, channels)
    assert got.flags.c_contiguous and got.dtype == np.int16
    assert np.array_equal(got, packed.reshape(-1, channels).T)
