"""BirdNET as the optional ``birds`` expert, on fakes: labels, weeks of the year,
the site filter, scores in the cascade, and the 3 s contexts cut around each window.

The classifier with BirdNET on a real bus, the service's wiring and the real
BirdNET V2.4 on real recordings are in ``test_birdnet_classifier.py``.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from datetime import UTC, datetime

import numpy as np
import numpy.typing as npt
import pytest

from inference.birdnet import (
    CONTEXT_SAMPLES,
    INPUT,
    BirdNetError,
    BirdNetExpert,
    SiteConfig,
    Species,
    parse_labels,
    sigmoid,
    site_species,
    week_of,
    weeks_of,
)
from inference.cascade import Cascade, CascadeError, RawAudio, decide_hierarchical
from inference.contexts import (
    Span,
    SpanContexts,
    audio_needed_after,
    audio_needed_before,
    context_start,
)
from inference.features import FeatureParams

F32 = npt.NDArray[np.float32]
I64 = npt.NDArray[np.int64]

WINDOW = 24_000

LABEL_LINES = [
    "Turdus merula_Eurasian Blackbird",
    "Erithacus rubecula_European Robin",
    "Poecile atricapillus_Black-capped Chickadee",
    "Pseudacris crucifer_Spring Peeper",  # a frog
    "Dog_Dog",  # not an animal species at all
    "Luscinia megarhynchos_Common Nightingale",
    "Sylvia borin_Garden Warbler",
]
CLASSES = parse_labels(LABEL_LINES)
# occurrence per class (columns in LABEL_LINES order) in a week: the blackbird all
# year, the robin in winter, the nightingale and the warbler in summer (the warbler
# barely), the frog and the dog "everywhere" (they must never be kept as birds)
WINTER = [0.9, 0.6, 0.0, 0.99, 0.99, 0.0, 0.0]
SUMMER = [0.8, 0.01, 0.0, 0.99, 0.99, 0.7, 0.04]
MAY = datetime(2024, 5, 15, tzinfo=UTC)
JANUARY = datetime(2024, 1, 10, tzinfo=UTC)


class FakeRange:
    """A range filter: weeks 13..39 are summer, the others winter."""

    def __init__(self) -> None:
        self.asked: list[tuple[float, float, int]] = []

    def occurrence(self, lat: float, lon: float, week: int) -> F32:
        self.asked.append((lat, lon, week))
        return np.array(SUMMER if 13 <= week <= 39 else WINTER, dtype=np.float32)


class FakeBirdNet:
    """Logits of the clip whose first sample is ``i / 1000``: ``table[i]``; records
    how many clips each call got."""

    def __init__(self, table: Sequence[Sequence[float]]) -> None:
        self.table = np.asarray(table, dtype=np.float32)
        self.calls: list[int] = []

    def logits(self, audio: F32) -> F32:
        assert audio.shape[1] == CONTEXT_SAMPLES
        self.calls.append(audio.shape[0])
        rows: F32 = self.table[np.rint(audio[:, 0] * 1000).astype(int)]
        return rows


class ArrayAudio:
    """``WindowAudio`` over given contexts: row i is ``audio[i]``."""

    def __init__(self, audio: F32, start_ns: I64) -> None:
        self.audio = audio
        self._start_ns = start_ns

    def contexts(self, rows: npt.NDArray[np.intp], samples: int) -> F32:
        return self.audio[rows, :samples]

    def start_ns(self, rows: npt.NDArray[np.intp]) -> I64:
        return self._start_ns[rows]


class FixedSelector:
    """A selector (birds, quiet) that scores every window ``birds`` = the given
    value in turn (cycled)."""

    model_id = "selector"
    version = "1.0.0"
    labels = ("birds", "quiet")

    def __init__(self, *birds: float) -> None:
        self.features = FeatureParams()
        self.birds = birds or (1.0,)

    def predict(self, features: F32) -> F32:
        b = np.resize(np.asarray(self.birds, dtype=np.float32), features.shape[0])
        return np.stack([b, 1.0 - b], axis=1).astype(np.float32)


def ns(when: datetime) -> int:
    return int(when.timestamp()) * 1_000_000_000


def clips(*rows: int) -> F32:
    """3 s clips whose first sample selects row ``i`` of a FakeBirdNet table."""
    out = np.zeros((len(rows), CONTEXT_SAMPLES), dtype=np.float32)
    out[:, 0] = np.asarray(rows, dtype=np.float32) / 1000
    return out


# ------------------------------------------------------------------ labels


def test_labels_become_slugs_and_what_is_not_a_bird_is_known() -> None:
    assert [s.slug for s in CLASSES] == [
        "eurasian_blackbird", "european_robin", "black_capped_chickadee", "spring_peeper",
        "dog", "common_nightingale", "garden_warbler"]
    assert [s.is_bird for s in CLASSES] == [True, True, True, False, False, True, True]
    assert Species(0, "Anaxyrus fowleri", "Fowler's Toad").slug == "fowlers_toad"
    assert Species(0, "Curruca rueppelli", "Rüppell's Warbler").slug == "ruppells_warbler"
    assert CLASSES[2].label == "Poecile atricapillus_Black-capped Chickadee"
    with pytest.raises(BirdNetError, match="not 'Scientific name_Common Name'"):
        parse_labels(["Turdus merula Eurasian Blackbird"])


def test_weeks_follow_birdnets_year_of_48() -> None:
    assert week_of(datetime(2023, 1, 1, tzinfo=UTC)) == 1
    assert week_of(datetime(2023, 12, 31, tzinfo=UTC)) == 48
    assert week_of(datetime(2023, 7, 1, tzinfo=UTC)) == 24  # day 182 of 365: 23.9
    assert week_of(datetime(2023, 7, 2, tzinfo=UTC)) == 25  # day 183: 24.06
    assert week_of(datetime(2024, 7, 1, tzinfo=UTC)) == 24  # day 183 of 366: 24.0
    assert week_of(MAY) == 18 and week_of(JANUARY) == 2  # days 136 and 10 of 366
    times = np.array([ns(JANUARY), ns(MAY)], dtype=np.int64)
    assert weeks_of(times).tolist() == [2, 18]


# ------------------------------------------------------------------ filter


def test_a_fixed_week_keeps_the_sites_birds_best_first_capped() -> None:
    model = FakeRange()
    site = site_species(CLASSES, model, SiteConfig(43.6, 3.9, week=20))
    assert model.asked == [(43.6, 3.9, 20)]
    # the frog and the dog pass the filter but are no birds; the robin (0.01) does not
    assert [s.slug for s in site.species] == [
        "eurasian_blackbird", "common_nightingale", "garden_warbler"]
    np.testing.assert_allclose(site.occurrence, [0.8, 0.7, 0.04], rtol=1e-6)
    assert site.in_season is None  # every species of the list, every window
    capped = site_species(CLASSES, model, SiteConfig(43.6, 3.9, week=20, max_species=2))
    assert [s.slug for s in capped.species] == ["eurasian_blackbird", "common_nightingale"]
    strict = site_species(CLASSES, model, SiteConfig(43.6, 3.9, week=20, min_occurrence=0.5))
    assert [s.slug for s in strict.species] == ["eurasian_blackbird", "common_nightingale"]
    year = site_species(CLASSES, model, SiteConfig(43.6, 3.9, week=-1))
    assert model.asked[-1] == (43.6, 3.9, -1) and year.species[0].slug == "eurasian_blackbird"


def test_week_auto_keeps_every_season_and_silences_species_out_of_theirs() -> None:
    model = FakeRange()
    config = SiteConfig(43.6, 3.9, week="auto")
    site = site_species(CLASSES, model, config)
    assert [w for _, _, w in model.asked] == list(range(1, 49))
    assert [s.slug for s in site.species] == [
        "eurasian_blackbird", "common_nightingale", "european_robin", "garden_warbler"]
    assert site.in_season is not None and site.in_season.shape == (48, 4)
    # the same logits in January and in May: the summer birds score 0 in January,
    # the robin 0 in May; the blackbird scores in both
    birdnet = FakeBirdNet([[2.0] * 7])
    expert = BirdNetExpert(birdnet, config, site)
    scores = expert.predict_audio(clips(0, 0), np.array([ns(JANUARY), ns(MAY)], np.int64))
    on = float(sigmoid(np.array([2.0], np.float32))[0])
    np.testing.assert_allclose(scores, [[on, 0.0, on, 0.0], [on, on, 0.0, on]], rtol=1e-6)


def test_a_filter_that_keeps_nothing_says_what_to_change() -> None:
    with pytest.raises(BirdNetError, match="no bird species reaches occurrence 0.995 at "
                                           r"\(43.6, 3.9\).*TIDZAM_BIRDNET_MIN_OCCURRENCE"):
        site_species(CLASSES, FakeRange(), SiteConfig(43.6, 3.9, 20, min_occurrence=0.995))
    for bad, match in (({"lat": 91.0}, "not a latitude"), ({"week": 0}, "week 0 is not"),
                       ({"week": 49}, "week 49"), ({"min_occurrence": 1.5}, "not in"),
                       ({"max_species": 0}, "must be ≥ 1")):
        args = {"lat": 43.6, "lon": 3.9, **bad}
        with pytest.raises(BirdNetError, match=match):
            SiteConfig(**args)  # type: ignore[arg-type]


# ------------------------------------------------------------ in the cascade


def summer_expert(table: Sequence[Sequence[float]]) -> tuple[BirdNetExpert, FakeBirdNet]:
    config = SiteConfig(43.6, 3.9, week=20)
    birdnet = FakeBirdNet(table)
    return BirdNetExpert(birdnet, config, site_species(CLASSES, FakeRange(), config)), birdnet


def test_expert_scores_are_the_sigmoids_of_the_site_species() -> None:
    logits = [[3.0, -1.0, 0.0, 9.0, 9.0, 1.0, -40.0]]
    expert, _ = summer_expert(logits)
    assert expert.model_id == "birds" and expert.audio == INPUT == RawAudio(48_000, 144_000)
    assert expert.labels == ("eurasian_blackbird", "common_nightingale", "garden_warbler")
    scores = expert.predict_audio(clips(0), np.array([ns(MAY)], np.int64))
    # the site's columns (blackbird 0, nightingale 5, warbler 6) in the list's order,
    # clipped at ±15 as BirdNET-Analyzer does
    expected = 1 / (1 + np.exp(-np.array([3.0, 1.0, -15.0])))
    np.testing.assert_allclose(scores[0], expected, rtol=1e-6)
    assert expert.predict_audio(clips()[:0], np.zeros(0, np.int64)).shape == (0, 3)
    # the version names BirdNET and the site: another filter, another version
    assert re.fullmatch(r"2\.4\.0-[0-9a-f]{8}", expert.version)
    other = BirdNetExpert(FakeBirdNet(logits), SiteConfig(43.6, 3.9, week=20, max_species=2),
                          site_species(CLASSES, FakeRange(), SiteConfig(43.6, 3.9, week=20)))
    assert other.version != expert.version
    assert "3 species at (43.6, 3.9), week 20" in expert.describe()
    assert "non-commercial" in expert.describe()


def test_species_are_birds_times_birdnet_and_run_only_past_the_gate() -> None:
    # window 0: birds 0.9, one clear species; 1: birds 0.8, two species at once;
    # 2: birds 0.2, under the gate: BirdNET does not run there
    expert, birdnet = summer_expert([[4.0, 0, 0, 0, 0, -4.0, -4.0],
                                     [4.0, 0, 0, 0, 0, 4.0, -4.0],
                                     [4.0, 0, 0, 0, 0, 4.0, 4.0]])
    cascade = Cascade(FixedSelector(0.9, 0.8, 0.2), {"birds": expert}, gate=0.3)
    assert cascade.labels == ("birds", "quiet", "birds-eurasian_blackbird",
                              "birds-common_nightingale", "birds-garden_warbler")
    assert cascade.context_samples == CONTEXT_SAMPLES
    assert cascade.version == f"1.0.0+birds.{expert.version}"
    features = np.zeros((3, *FeatureParams().shape), dtype=np.float32)
    audio = ArrayAudio(clips(0, 1, 2), np.full(3, ns(MAY), np.int64))
    s = cascade.predict(features, audio)
    assert birdnet.calls == [2]  # the gated rows only
    sg = float(sigmoid(np.array([4.0], np.float32))[0])
    np.testing.assert_allclose(s[0, 2:], [0.9 * sg, 0.9 * (1 - sg), 0.9 * (1 - sg)], rtol=1e-5)
    np.testing.assert_allclose(s[1, 2:], [0.8 * sg, 0.8 * sg, 0.8 * (1 - sg)], rtol=1e-5)
    assert np.all(s[2, 2:] == 0.0)
    # independent sigmoids: children do not sum to their parent, none exceeds it
    assert s[1, 2:].sum() > s[1, 0] and np.all(s[:, 2:] <= s[:, :1] + 1e-6)
    # one clear species is the decision; two at once leave it at birds
    assert cascade.decide(s[0]) == ("birds-eurasian_blackbird",)
    assert cascade.decide(s[1]) == ("birds",)
    assert decide_hierarchical(cascade.labels, s[2], 0.5, 0.1) == ("quiet",)


def test_an_audio_expert_needs_the_audio_and_the_selectors_rate() -> None:
    expert, _ = summer_expert([[0.0] * 7])
    cascade = Cascade(FixedSelector(), {"birds": expert})
    with pytest.raises(CascadeError, match=r"birds listen to the raw audio around each window: "
                                           r"pass it to predict \(audio=\.\.\.\)"):
        cascade.predict(np.zeros((1, *FeatureParams().shape), dtype=np.float32))
    assert Cascade.single(FixedSelector()).context_samples == 0

    class At16k(BirdNetExpert):
        @property
        def audio(self) -> RawAudio:
            return RawAudio(16_000, 48_000)

    slow = At16k(FakeBirdNet([[0.0] * 7]), expert.config, expert.site)
    with pytest.raises(CascadeError, match=r"listens to audio at 16000 Hz where the selector "
                                           r"selector@1\.0\.0 runs at 48000 Hz"):
        Cascade(FixedSelector(), {"birds": slow})


# ------------------------------------------------------------------ contexts


def test_contexts_are_centred_and_shifted_into_the_session() -> None:
    ctx = 144_000
    # centred: 1.25 s each side of a 0.5 s window, where the audio reaches
    assert context_start(100_000, WINDOW, ctx, 0, 400_000) == 40_000
    assert context_start(10_000, WINDOW, ctx, 0, 400_000) == 0  # session start: shifted
    assert context_start(390_000, WINDOW, ctx, 0, 400_000) == 256_000  # its end: shifted
    assert context_start(10_000, WINDOW, ctx, 0, 100_000) == 0  # too short: from the start
    # a chunk needs the lead of its first window from before it, no more, unless
    # the session ends soon after: then as far back as the end-shifted context
    assert audio_needed_before(96_000, 48_000, 18_000, WINDOW, ctx, 10**6) == 60_000 - 12_000
    assert audio_needed_before(108_000, 48_000, 18_000, WINDOW, ctx, 10**6) == 60_000
    assert audio_needed_before(108_000, 48_000, 18_000, WINDOW, ctx, 170_000) == 82_000
    assert audio_needed_before(24_000, 24_000, 18_000, WINDOW, ctx, 10**6) == 24_000
    assert audio_needed_before(100, 10, 18_000, WINDOW, ctx, 10**6) == 0  # no window there
    # and after its last window: C - lead from its start, or a whole context from the
    # session's first sample while that is further
    assert audio_needed_after(96_000, 48_000, 18_000, WINDOW, ctx) == 126_000 + 84_000 - 144_000
    assert audio_needed_after(0, 24_000, 18_000, WINDOW, ctx) == 144_000 - 24_000
    assert audio_needed_after(100, 10, 18_000, WINDOW, ctx) == 0
    ramp = np.arange(250_000, dtype=np.float32)
    span = Span(ramp[50_000:], 50_000)  # the session's audio from sample 50,000
    starts = np.array([54_000, 126_000, 230_000], dtype=np.int64)
    audio = SpanContexts(WINDOW, [span], np.zeros(3, np.int64), starts, starts * 7)
    got = audio.contexts(np.array([2, 0, 1]), ctx)
    assert got.shape == (3, ctx) and got.dtype == np.float32
    assert got[:, 0].tolist() == [106_000, 50_000, 66_000]  # end- and start-shifted, centred
    for row, first in zip(got, (106_000, 50_000, 66_000), strict=True):
        np.testing.assert_array_equal(row, ramp[first:first + ctx])
    short = SpanContexts(WINDOW, [Span(ramp[:30_000], 0)], np.zeros(1, np.int64),
                         np.zeros(1, np.int64), np.zeros(1, np.int64))
    padded = short.contexts(np.array([0]), ctx)[0]
    assert np.array_equal(padded[:30_000], ramp[:30_000]) and not padded[30_000:].any()
    assert audio.start_ns(np.array([1])).tolist() == [126_000 * 7]

