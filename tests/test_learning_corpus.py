"""learning.corpus: labelling by path, licences, sound archives, deduplication."""

from __future__ import annotations

import io
import os
import shutil
import wave
from pathlib import Path

import pytest

from learning.corpus import fetch as corpus
from learning.corpus.build import Candidate, label_files
from learning.corpus.fetch import CorpusError, FetchedPackage, read_cat
from learning.corpus.licences import dep5_licence
from learning.corpus.packages import PACKAGES, rule_for

MG = "usr/share/games/megaglest/"
TUX = "usr/share/tuxpaint/stamps/"


@pytest.mark.parametrize(("package", "path", "label"), [
    ("megaglest-data", MG + "tilesets/forest/sounds/day.ogg", "birds"),
    ("megaglest-data", MG + "tilesets/autumn/sounds/sunny_day.ogg", "birds"),
    ("megaglest-data", MG + "tilesets/desert2/sounds/hawk.ogg", "birds"),
    ("megaglest-data", MG + "tilesets/dark_forest/sounds/night.ogg", "insects"),
    ("megaglest-data", MG + "tilesets/winter/sounds/wind.ogg", "wind"),
    ("megaglest-data", MG + "tilesets/desert2/sounds/rain.wav", "rain"),
    ("megaglest-data", MG + "data/core/water_sounds/water3.wav", "water"),
    ("tuxpaint-stamps-default", TUX + "animals/birds/crow.ogg", "birds"),
    ("tuxpaint-stamps-default", TUX + "animals/birds/crow_desc_fr.ogg", "speech"),
    ("tuxpaint-stamps-default", TUX + "animals/amphibians/frog.ogg", "frog"),
    ("tuxpaint-stamps-default", TUX + "naturalforces/lightningbolt.ogg", "thunder"),
    ("tuxpaint-stamps-default", TUX + "vehicles/emergency/firetruck.ogg", "vehicle"),
    ("asterisk-core-sounds-en-wav",
     "usr/share/asterisk/sounds/en_US_f_Allison/digits/1.wav", "speech"),
    ("openttd-opensfx", "usr/share/games/openttd/baseset/opensfx/opensfx.cat#24", "vehicle"),
])
def test_paths_get_their_class(package: str, path: str, label: str) -> None:
    rule = rule_for(package, path)
    assert rule is not None and rule.label == label


@pytest.mark.parametrize(("package", "path"), [
    ("megaglest-data", MG + "tilesets/birch_forest/sounds/night.ogg"),  # ambiguous: excluded
    ("megaglest-data", MG + "tilesets/mediterran/sounds/desertday.ogg"),
    ("tuxpaint-stamps-default", TUX + "vehicles/ship/cartoon/bathyscape.ogg"),
])
def test_ambiguous_paths_are_excluded(package: str, path: str) -> None:
    rule = rule_for(package, path)
    assert rule is not None and rule.label is None and rule.note


def test_unrelated_paths_have_no_rule() -> None:
    assert rule_for("megaglest-data", MG + "tilesets/forest/sounds/wolf.wav") is None
    assert rule_for("megaglest-data", "usr/share/tuxpaint/stamps/animals/birds/crow.ogg") is None


COPYRIGHT = """\
Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/

Files: *
Copyright: 2001 Someone
License: GPL-2+ or CDDL

Files: src/wav/*
  src/other/*
Copyright: Various
License: CC-BY-SA-3.0
 The sounds are relicensed.

License: GPL-2+
 text
"""


def test_dep5_licence_reads_the_stanza_of_the_pattern() -> None:
    assert dep5_licence(COPYRIGHT, "src/wav/*") == "CC-BY-SA-3.0"
    assert dep5_licence(COPYRIGHT, "src/other/*") == "CC-BY-SA-3.0"
    assert dep5_licence(COPYRIGHT, "*") == "GPL-2+ or CDDL"
    with pytest.raises(CorpusError):
        dep5_licence(COPYRIGHT, "data/*")


def _wav_bytes(n: int = 2000, value: int = 1000) -> bytes:
    buf = io.BytesIO()
    with wave.open(buf, "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(8000)
        out.writeframes(value.to_bytes(2, "little", signed=True) * n)
    return buf.getvalue()


def test_read_cat_parses_titles_and_skips_empty_entries() -> None:
    entries = [(b'"Wind". By X.\0', _wav_bytes()), (b"empty\0", b""), (b"horn\0", _wav_bytes(50))]
    table_size = 8 * len(entries)
    table, body = b"", b""
    for title, wav in entries:
        blob = bytes([len(title)]) + title + wav if wav else b""
        offset = (table_size + len(body)) | 0x8000_0000
        table += offset.to_bytes(4, "little") + len(blob).to_bytes(4, "little")
        body += blob
    found = read_cat(table + body)
    assert [(e.index, e.title) for e in found] == [(0, '"Wind". By X.'), (2, "horn")]
    assert found[0].wav[:4] == b"RIFF"


def _package(tmp: Path, name: str) -> FetchedPackage:
    root = tmp / "pkgs" / name
    root.mkdir(parents=True, exist_ok=True)
    return FetchedPackage(PACKAGES[name], "1.0-1", tmp / f"{name}.deb", root, "CC-BY-SA-3.0")


def _candidate(pkg: FetchedPackage, path: str, content: bytes) -> Candidate:
    local = pkg.root / path
    local.parent.mkdir(parents=True, exist_ok=True)
    local.write_bytes(content)
    return Candidate(pkg, path, local)


def test_label_files_deduplicates_and_excludes_conflicts(tmp_path: Path) -> None:
    mg = _package(tmp_path, "megaglest-data")
    tux = _package(tmp_path, "tuxpaint-stamps-default")
    rain, birds, clash = _wav_bytes(value=10), _wav_bytes(value=20), _wav_bytes(value=30)
    candidates = [
        _candidate(mg, MG + "tilesets/forest/sounds/rain.ogg", rain),
        _candidate(mg, MG + "tilesets/meadow/sounds/rain.ogg", rain),  # a copy
        _candidate(mg, MG + "tilesets/forest/sounds/day.ogg", birds),
        _candidate(mg, MG + "tilesets/jungle/sounds/day.ogg", clash),
        _candidate(tux, TUX + "naturalforces/lightningbolt.ogg", clash),  # same bytes, thunder
        _candidate(mg, MG + "tilesets/forest/sounds/wolf.wav", _wav_bytes(value=40)),
    ]
    files, excluded = label_files(candidates, tmp_path)
    assert [(f.label, f.path.split("/")[-3]) for f in files] == [("birds", "forest"),
                                                                   ("rain", "forest")]
    assert files[1].duplicates == ["megaglest-data:" + MG + "tilesets/meadow/sounds/rain.ogg"]
    assert files[0].local.startswith("pkgs/megaglest-data/")
    assert files[0].group.startswith("sha256:") and files[0].licence == "CC-BY-SA-3.0"
    assert len(excluded) == 1 and "conflicting" in excluded[0].reason


def test_large_groups_are_subsampled_evenly(tmp_path: Path) -> None:
    tux = _package(tmp_path, "tuxpaint-stamps-default")
    candidates = [_candidate(tux, TUX + f"food/item{i:02d}_desc_fr.ogg", _wav_bytes(value=i + 1))
                  for i in range(60)]
    files, _ = label_files(candidates, tmp_path)
    assert len(files) == 25
    assert {f.group for f in files} == {"tuxpaint-desc:fr"}
    assert files[0].path.endswith("item00_desc_fr.ogg")


def test_missing_apt_lists_without_root_says_what_to_run(tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(corpus, "_apt_lists_present", lambda: False)
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    monkeypatch.setattr(shutil, "which", lambda _name: "/usr/bin/apt-get")
    with pytest.raises(CorpusError, match="apt-get update"):
        corpus.fetch_package("openttd-opensfx", tmp_path)


def test_unknown_package_is_refused(tmp_path: Path) -> None:
    with pytest.raises(CorpusError, match="unknown corpus package"):
        corpus.fetch_package("not-a-package", tmp_path)


def test_mixtures_and_english_descriptions_are_labelled_as_heard() -> None:
    tile = "usr/share/games/megaglest/tilesets/"
    storm = rule_for("megaglest-data", tile + "autumn/sounds/rain.ogg")
    assert storm is not None and storm.label == "rain" and storm.also == ("thunder",)
    plain = rule_for("megaglest-data", tile + "dark_forest/sounds/rain.ogg")
    assert plain is not None and plain.label == "rain" and plain.also == ()
    desc = rule_for("tuxpaint-stamps-default",
                    "usr/share/tuxpaint/stamps/animals/birds/robin_desc.ogg")
    assert desc is not None and desc.label == "speech"
    call = rule_for("tuxpaint-stamps-default", "usr/share/tuxpaint/stamps/animals/birds/robin.ogg")
    assert call is not None and call.label == "birds"
