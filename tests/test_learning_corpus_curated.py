"""learning.corpus: the curated packages' rules (issue 9), groups, licences, selection."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from learning.corpus import build
from learning.corpus.fetch import FetchedPackage
from learning.corpus.packages import (
    CLASSES,
    CURATED_PACKAGES,
    DEFAULT_PACKAGES,
    PACKAGES,
    RULES,
    SUPPLEMENT_PACKAGES,
    rule_for,
)
from learning.corpus.rules_extra import EXTRA_PACKAGES

UFO = "usr/share/games/ufoai/base/0snd.pk3#sound/ambience/"
NEX = "usr/share/games/nexuiz/data/data.pk3#sound/"
OC = "usr/share/games/openclonk/Sound.ocg#"
BR = "usr/share/games/berusky2/sound/sound/"
RE = "usr/share/games/redeclipse/data/sounds/ambience/"
FG = "usr/share/games/flightgear/"
MT = "usr/share/games/minetest/games/minetest_game/mods/env_sounds/sounds/"
QA = "usr/share/qabcs/abcs/all/noises/"
TO = "usr/share/games/torcs/data/sound/"
SAR = "usr/share/games/searchandrescue/sounds/"


@pytest.mark.parametrize(("package", "path", "label"), [
    ("ufoai-sound", UFO + "cricket_loop.ogg", "insects"),
    ("ufoai-sound", UFO + "thunder2.ogg", "thunder"),
    ("ufoai-sound", UFO + "waterfontain.ogg", "water"),
    ("ufoai-sound", UFO + "arcticwind.ogg", "wind"),
    ("nexuiz-data", NEX + "desertfactory/cricket_loop.wav", "insects"),
    ("nexuiz-data", NEX + "weather/rain_1.ogg", "rain"),
    ("openclonk-data", OC + "Environment.ocg/BirdsLoop.ogg", "birds"),
    ("openclonk-data", OC + "Environment.ocg/WindLoop.ogg", "wind"),
    ("openclonk-data", OC + "Environment.ocg/Waterfall.ogg", "water"),
    ("openclonk-data", OC + "Environment.ocg/Lightning.ocg/Thunder5.ogg", "thunder"),
    ("openclonk-data", OC + "Liquids.ocg/StereoRain.ogg", "rain"),
    ("openclonk-data", OC + "Animals.ocg/MosquitoBuzz.ogg", "insects"),
    ("berusky2-data", BR + "frog2.wav", "frog"),
    ("berusky2-data", BR + "swamp1.wav", "frog"),
    ("berusky2-data", BR + "les1.wav", "birds"),
    ("berusky2-data", BR + "ptak10.wav", "birds"),
    ("berusky2-data", BR + "Voda2.wav", "water"),
    ("berusky2-data", BR + "Auto4.wav", "vehicle"),
    ("redeclipse-data", RE + "cycadas.ogg", "insects"),
    ("redeclipse-data", RE + "nightcrickets.ogg", "insects"),
    ("redeclipse-data", RE + "creek.ogg", "water"),
    ("redeclipse-data", RE + "waterfall_medium.ogg", "water"),
    ("redeclipse-data", RE + "morph/stormrain.ogg", "rain"),
    ("redeclipse-data", RE + "morph/stormbolts.ogg", "thunder"),
    ("redeclipse-data", RE + "morph/wind2.ogg", "wind"),
    ("redeclipse-data", RE + "distant_cars.ogg", "vehicle"),
    ("flightgear-data-base", FG + "Sounds/thunder3.wav", "thunder"),
    ("flightgear-data-base", FG + "Sounds/engine-prop.wav", "vehicle"),
    ("flightgear-data-base", FG + "Sounds/rotor-2blade.wav", "vehicle"),
    ("flightgear-data-base", FG + "Aircraft/c172p/Sounds/engine-idle.wav", "vehicle"),
    ("flightgear-data-base", FG + "Aircraft/c172p/Sounds/water-fast.wav", "water"),
    ("minetest-data", MT + "env_sounds_water.3.ogg", "water"),
    ("qabcs-data", QA + "eagle-owl.ogg", "birds"),
    ("qabcs-data", QA + "guinea_fowl.ogg", "birds"),
    ("qabcs-data", QA + "grasshopper.ogg", "insects"),
    ("qabcs-data", QA + "frog.ogg", "frog"),
    ("qabcs-data", QA + "tractor.ogg", "vehicle"),
    ("torcs-data", TO + "935.wav", "vehicle"),
    ("torcs-data", TO + "evo7_engine_f.wav", "vehicle"),
    ("searchandrescue-data", SAR + "hh65/engine_inside.wav", "vehicle"),
    ("searchandrescue-data", SAR + "jet_engine_shutdown3.wav", "vehicle"),
])
def test_curated_paths_get_their_class(package: str, path: str, label: str) -> None:
    rule = rule_for(package, path)
    assert rule is not None and rule.label == label


@pytest.mark.parametrize(("package", "path"), [
    ("ufoai-sound", UFO + "ufo_night_atm.ogg"),  # a mixture
    ("nexuiz-data", NEX + "desertfactory/windhowling_loop.ogg"),  # synthesized
    ("openclonk-data", OC + "Liquids.ocg/Splash2.wav"),  # foley
    ("berusky2-data", BR + "frog5.wav"),  # cartoon croak
    ("berusky2-data", BR + "Ptak3.wav"),  # synthetic whistles
    ("berusky2-data", BR + "Hrom1.wav"),  # thunder heard as an explosion
    ("redeclipse-data", RE + "forest2.ogg"),  # insects and birds
    ("redeclipse-data", RE + "waterfall_indoor.ogg"),  # filtered
    ("redeclipse-data", RE + "wind.ogg"),  # heard as a train
    ("flightgear-data-base", FG + "Sounds/rain.wav"),  # heard as a waterfall
    ("flightgear-data-base", FG + "Sounds/wind1.wav"),  # white noise
    ("qabcs-data", QA + "zozulka.ogg"),  # a whistle imitating a bird
    ("qabcs-data", QA + "ladybug.ogg"),  # foley
    ("qabcs-data", QA + "crane.ogg"),  # a toy crane
    ("torcs-data", TO + "renault-v10.wav"),  # tonal
    ("searchandrescue-data", SAR + "thunder_loud.wav"),  # heard as music
    ("searchandrescue-data", SAR + "hh65/engine_start.wav"),  # starter whine
])
def test_curated_exclusions_say_why(package: str, path: str) -> None:
    rule = rule_for(package, path)
    assert rule is not None and rule.label is None and rule.note


@pytest.mark.parametrize(("package", "path"), [
    ("ufoai-sound", UFO + "alienmachinery3.ogg"),
    ("nexuiz-data", NEX + "weapons/rocket_fire.wav"),
    ("openclonk-data", OC + "Objects.ocg/Weapons.ocg/Blunderbuss.ocg/GunShoot1.ogg"),
    ("berusky2-data", "usr/share/games/berusky2/music/Piano.ogg"),
    ("flightgear-data-base", FG + "Sounds/mk-viii/pull-up.wav"),
    ("torcs-data", TO + "crash3.wav"),
    ("qabcs-data", "usr/share/qabcs/abcs/en/sounds/words/frog.ogg"),  # a spoken word
])
def test_effects_music_and_weapons_have_no_rule(package: str, path: str) -> None:
    assert rule_for(package, path) is None


def _group(package: str, path: str) -> str | None:
    rule = rule_for(package, path)
    assert rule is not None and rule.group is not None
    match = rule.regex.fullmatch(path)
    assert match is not None
    return rule.group(match, "")


def test_one_recording_in_two_packages_is_one_group() -> None:
    assert _group("ufoai-sound", UFO + "cricket_loop.ogg") == \
        _group("nexuiz-data", NEX + "desertfactory/cricket_loop.wav")
    assert _group("flightgear-data-base", FG + "Sounds/helicopter.wav") == \
        _group("searchandrescue-data", SAR + "helicopter_engine_inside.wav")
    assert _group("flightgear-data-base", FG + "Sounds/turbine_shutdown.wav") == \
        _group("searchandrescue-data", SAR + "hh60/engine_shutdown.wav") == \
        _group("searchandrescue-data", SAR + "helicopter_engine_shutdown.wav")
    assert _group("ufoai-sound", UFO + "water.ogg") == \
        _group("nexuiz-data", NEX + "ambient/water.ogg")
    assert _group("flightgear-data-base", FG + "Sounds/whine.wav") == \
        _group("searchandrescue-data", SAR + "jet_engine_inside_old.wav")
    assert _group("minetest-data", MT + "env_sounds_water.1.ogg") == \
        _group("minetest-data", MT + "env_sounds_water.4.ogg")


def test_the_curated_selection_holds_every_package_and_keeps_the_default() -> None:
    assert set(CURATED_PACKAGES) == set(PACKAGES) and len(set(CURATED_PACKAGES)) == len(PACKAGES)
    assert CURATED_PACKAGES[:len(DEFAULT_PACKAGES)] == DEFAULT_PACKAGES
    assert DEFAULT_PACKAGES == ("megaglest-data", "tuxpaint-stamps-default",
                                "asterisk-core-sounds-en-wav", "openttd-opensfx",
                                "lincity-ng-data", "supertux-data", "widelands-data")
    assert SUPPLEMENT_PACKAGES == ("scorched3d-data",)
    for avoided in ("0ad-data", "0ad-data-common", "supertuxkart-data", "cube2-data"):
        assert avoided not in PACKAGES  # kept for an independent evaluation
    assert not any(name.startswith("wesnoth") for name in PACKAGES)


def test_every_rule_is_sound() -> None:
    for rule in RULES:
        assert rule.package in PACKAGES
        assert rule.label is None or rule.label in CLASSES
        assert rule.label is not None or rule.note, rule.pattern
        if rule.licence is not None:
            assert rule.licence in PACKAGES[rule.package].licences
    for spec in EXTRA_PACKAGES:  # every curated rule looks inside what is unpacked
        prefixes = tuple(k.replace(".", r"\.") for k in spec.keep)
        for rule in (r for r in RULES if r.package == spec.name):
            assert rule.pattern.startswith(prefixes), rule.pattern


COPYRIGHT = """\
Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/

Files: *
Copyright: The UFO:AI Team
License: GPL-2+

Files:
 base/sound/ambience/thunder1.ogg
 base/sound/ambience/water01.ogg
Copyright: Someone
License: CC-BY-SA-3.0
"""


def test_build_corpus_takes_the_curated_packages(tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    files = {"ufoai-sound": {UFO + "cricket_loop.ogg": b"c1", UFO + "thunder1.ogg": b"t",
                             UFO + "water01.ogg": b"w", UFO + "alienmachinery3.ogg": b"m"},
             "nexuiz-data": {NEX + "desertfactory/cricket_loop.wav": b"c2",
                             NEX + "desertfactory/windhowling_loop.ogg": b"h"},
             "openclonk-data": {OC + "Animals.ocg/MosquitoBuzz.ogg": b"mq",
                                OC + "Environment.ocg/BirdsLoop.ogg": b"b"}}

    def fake_fetch(name: str, cache: Path) -> FetchedPackage:
        root = cache / "pkgs" / name
        for path, data in files[name].items():
            inside, _, member = path.partition("#")
            local = root / "_members" / inside / member
            local.parent.mkdir(parents=True, exist_ok=True)
            local.write_bytes(data)
        (cache / f"{name}.deb").write_bytes(name.encode())
        spec = PACKAGES[name]
        return FetchedPackage(spec, "1", cache / f"{name}.deb", root, spec.expected_licence,
                              COPYRIGHT)

    monkeypatch.setattr(build, "fetch_package", fake_fetch)
    manifest = build.build_corpus(tmp_path, ("ufoai-sound", "nexuiz-data", "openclonk-data"))
    by_path = {f.path: f for f in manifest.files}
    assert set(manifest.packages) == {"ufoai-sound", "nexuiz-data", "openclonk-data"}
    assert len(by_path) == 6 and [e.path for e in manifest.excluded] == [
        NEX + "desertfactory/windhowling_loop.ogg"]
    cricket = by_path[UFO + "cricket_loop.ogg"]
    assert cricket.group == by_path[NEX + "desertfactory/cricket_loop.wav"].group
    assert (cricket.licence, by_path[UFO + "thunder1.ogg"].licence,
            by_path[UFO + "water01.ogg"].licence) == ("GPL-2+", "CC-BY-SA-3.0", "CC-BY-SA-3.0")
    assert by_path[OC + "Animals.ocg/MosquitoBuzz.ogg"].licence == "CC0-1.0"
    assert by_path[OC + "Environment.ocg/BirdsLoop.ogg"].licence == "CC-BY-3.0"


def test_the_command_line_writes_a_selection_s_manifest(tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch,
                                                        capsys: pytest.CaptureFixture[str]
                                                        ) -> None:
    asked: list[tuple[str, ...]] = []

    def fake_build(cache: Path | None, packages: tuple[str, ...]) -> object:
        asked.append(tuple(packages))
        return build.CorpusManifest(created=datetime.now(UTC), classes=list(CLASSES),
                                    packages={}, files=[], excluded=[])

    monkeypatch.setattr(build, "build_corpus", fake_build)
    out = tmp_path / "corpus.json"
    assert build.main(["--packages", "curated", "--out", str(out)]) == 0
    assert build.main(["--packages", "qabcs-data, torcs-data", "--out", str(out)]) == 0
    assert asked == [CURATED_PACKAGES, ("qabcs-data", "torcs-data")]
    assert build.CorpusManifest.load(out).files == []
    assert "0 files" in capsys.readouterr().out
