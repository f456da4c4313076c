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


def _encoded(source: Path, path: Path, codec: str) -> Path:
    """``source`` (a stereo WAV) encoded with ``codec`` at 48 kHz into ``path``."""
    with av.open(str(source)) as inp, av.open(str(path), "w") as out:
        enc = out.add_stream(codec, rate=48_000, layout="stereo")
        assert isinstance(enc, av.audio.stream.AudioStream)
        for frame in inp.decode(audio=0):
            frame.pts = None
            for packet in enc.encode(frame):
                out.mux(packet)
        for packet in enc.encode(None):
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
    path = source if codec is None else _encoded(source, tmp_path / f"coded.{ext}", codec)
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
        path = _encoded(path, tmp_path / "coded.opus", codec)

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


# ---------------------------------------------------------------- damaged packets


def _vorbis_mka_with_bad_packets(path: Path, seconds: float, bad: slice) -> tuple[Path, int]:
    """A stereo Vorbis in Matroska (no container checksum to hide the damage from the
    decoder) whose packets ``bad`` begin with a set bit: "not a Vorbis audio packet"
    to FFmpeg's decoder. (path, how many packets were damaged)."""
    rate = 44_100
    _write_ogg_vorbis(path.with_suffix(".ogg"), _tones(rate, seconds, (440.0, 880.0)), rate)
    with av.open(str(path.with_suffix(".ogg"))) as inp, \
            av.open(str(path), "w", format="matroska") as out:
        stream = out.add_stream_from_template(inp.streams.audio[0])
        for packet in inp.demux(audio=0):
            if packet.size:
                packet.stream = stream
                out.mux(packet)
    raw = bytearray(path.read_bytes())
    with av.open(str(path)) as written:
        payloads = [bytes(p) for p in written.demux(audio=0) if p.size]
    for payload in payloads[bad]:
        at = raw.find(payload)
        assert at > 0 and raw.find(payload, at + 1) < 0  # stored verbatim, once
        raw[at] |= 0x01
    path.write_bytes(raw)
    return path, len(payloads[bad])


def test_one_undecodable_packet_is_skipped_as_ffmpeg_does(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """One packet the decoder rejects costs its few milliseconds, not the whole file;
    ``ffmpeg`` itself decodes the file to its end and reports the one error."""
    import subprocess

    path, damaged = _vorbis_mka_with_bad_packets(tmp_path / "scratch.mka", 4.0, slice(80, 81))
    assert damaged == 1
    ffmpeg = subprocess.run(["ffmpeg", "-nostdin", "-i", str(path), "-f", "null", "-"],
                            capture_output=True, text=True, check=True)
    assert ffmpeg.stderr.count("Error while decoding stream") == 1
    clean, _ = decode_all(path.with_suffix(".ogg"), 44_100)  # the same packets, undamaged
    with AudioStream(path, 44_100) as decoder:
        with caplog.at_level("WARNING", logger="audio.decode"):
            audio = np.concatenate([b.samples for b in decoder.blocks()], axis=1)
        assert decoder.skipped_packets == 1
    assert audio.shape[0] == 2 and 0 < clean.shape[1] - audio.shape[1] <= 1024  # one block
    # Before the scratch and once the decoder has its next block, the samples are intact.
    assert np.array_equal(audio[:, :44_100], clean[:, :44_100])
    assert np.array_equal(audio[:, -88_200:], clean[:, -88_200:])
    assert "scratch.mka: skipped a packet at 1." in caplog.text


def test_a_stream_of_undecodable_packets_is_an_error(tmp_path: Path) -> None:
    path, damaged = _vorbis_mka_with_bad_packets(tmp_path / "garbage.mka", 4.0, slice(20, None))
    assert damaged > 50
    with pytest.raises(AudioDecodeError, match=r"garbage\.mka: 50 packets in a row could not"):
        decode_all(path, 16_000)
    path, _ = _vorbis_mka_with_bad_packets(tmp_path / "nothing.mka", 1.0, slice(None))
    with pytest.raises(AudioDecodeError, match=r"nothing\.mka: no packet could be decoded"):
        decode_all(path, 16_000)


def test_garbage_after_a_valid_header_raises(tmp_path: Path) -> None:
    path = _write_ogg_vorbis(tmp_path / "tones.ogg", _tones(44_100, 2.0, (500.0,) * 2), 44_100)
    raw = path.read_bytes()
    body = raw.index(b"OggS", raw.index(b"\x05vorbis"))  # the first page after the headers
    path.write_bytes(raw[:body] + np.random.default_rng(1).bytes(len(raw) - body))
    with pytest.raises(AudioDecodeError, match=r"cannot decode .*tones\.ogg"):
        decode_all(path, 48_000)


def test_tags_that_are_not_utf8_do_not_hide_the_audio(tmp_path: Path) -> None:
    """An old WAV editor's "Copyright \\xa9" in Latin-1 (scorched3d's sounds)."""
    path = _write_wav(tmp_path / "latin1.wav", _tones(8_000, 0.5, (440.0,)), 8_000)
    raw = path.read_bytes()
    isft = b"ISFT" + (12).to_bytes(4, "little") + b"Awave \xa9 FMJ\x00"
    info = b"LIST" + (4 + len(isft)).to_bytes(4, "little") + b"INFO" + isft
    fmt_end = raw.index(b"data")
    raw = raw[:fmt_end] + info + raw[fmt_end:]
    path.write_bytes(raw[:4] + (len(raw) - 8).to_bytes(4, "little") + raw[8:])
    audio, rate = decode_file(path, 8_000)
    assert rate == 8_000 and audio.shape == (1, 4_000)
