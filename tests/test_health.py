"""Channel health of real and synthetic audio: level, peak, clipping, noise floor, DC,
mains hum, dead channels."""

from __future__ import annotations

import numpy as np
import pytest

from audio.decode import decode_all
from audio.health import SILENCE_DBFS, block_health
from bus_schemas import pcm
from tests.real_audio import DAY, MEGAGLEST, real_file

RATE = 48_000
T = np.arange(RATE) / RATE


def test_a_sine_has_its_level_and_peak() -> None:
    [h] = block_health((0.5 * np.sin(2 * np.pi * 1000 * T)).astype(np.float32), RATE)
    assert h.rms_dbfs == pytest.approx(-9.03, abs=0.01)
    assert h.peak_dbfs == pytest.approx(-6.02, abs=0.01)
    assert h.clip_ratio == 0 and not h.dead and abs(h.dc_offset) < 1e-6
    assert h.noise_floor_dbfs == pytest.approx(-9.03, abs=0.05)  # steady: floor = level
    assert h.hum_db < -60


def test_clipping_hum_dc_and_dead_channels_are_told_apart() -> None:
    rng = np.random.default_rng(0)
    noise = 0.01 * rng.standard_normal(RATE)
    clipped = np.clip(2.0 * np.sin(2 * np.pi * 440 * T), -1, 1)
    hum = noise + 0.05 * np.sin(2 * np.pi * 60 * T) + 0.02 * np.sin(2 * np.pi * 120 * T)
    stuck = np.full(RATE, 1234, dtype=np.int16)
    block = np.stack([pcm.to_int16(clipped.astype(np.float32)),
                      pcm.to_int16(hum.astype(np.float32)),
                      stuck, np.zeros(RATE, np.int16),
                      pcm.to_int16((noise + 0.2).astype(np.float32))])
    c, h, s, z, dc = block_health(block, RATE)
    assert c.clip_ratio > 0.5 and c.peak_dbfs == pytest.approx(0.0, abs=0.01)
    assert h.hum_hz == 60 and h.hum_db > -1.0 and h.clip_ratio == 0  # hum is most of it
    assert s.dead and s.dc_offset == pytest.approx(1234 / 32768, abs=1e-6)
    assert z.dead and z.rms_dbfs == SILENCE_DBFS == z.peak_dbfs
    assert dc.dc_offset == pytest.approx(0.2, abs=1e-3) and not dc.dead
    assert not c.dead and not h.dead


def test_the_noise_floor_is_the_level_between_events() -> None:
    rng = np.random.default_rng(1)
    quiet = 0.001 * rng.standard_normal(RATE)  # -60 dBFS
    quiet[10_000:14_000] += 0.5 * rng.standard_normal(4_000)  # a loud call
    [h] = block_health(quiet.astype(np.float32), RATE)
    assert h.noise_floor_dbfs == pytest.approx(-60.0, abs=1.0)
    assert h.rms_dbfs > -25  # the call dominates the level, not the floor


def test_real_audio() -> None:
    audio, _ = decode_all(real_file(MEGAGLEST, DAY), RATE)
    block = pcm.to_int16(audio[:, :RATE].astype(np.float32))
    health = block_health(block, RATE)
    assert len(health) == 2 and all(-60 < h.rms_dbfs < 0 and not h.dead for h in health)
    assert all(h.noise_floor_dbfs <= h.rms_dbfs for h in health)
    with pytest.raises(ValueError, match="without samples"):
        block_health(np.zeros((2, 0), np.int16), RATE)
