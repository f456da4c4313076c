"""learning.corpus: sound archives (.pk3 zips, OpenClonk groups), per-file licences."""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from learning.corpus import fetch
from learning.corpus.build import scan
from learning.corpus.fetch import CorpusError, FetchedPackage, member_path
from learning.corpus.licences import dep5_file_licence, dep5_match, package_licence
from learning.corpus.spec import PackageSpec

PK3 = "usr/share/games/demo/data.pk3"
OCG = "usr/share/games/demo/Sound.ocg"


def _spec(*keep: str, **kw: object) -> PackageSpec:
    return PackageSpec("demo-data", "*", "GPL-2+", keep, **kw)  # type: ignore[arg-type]


def _no_tool(name: str) -> Path:
    raise AssertionError(f"no tool expected, asked for {name}")


def _zip(path: Path, members: dict[str, bytes]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)


def _package(root: Path, spec: PackageSpec) -> FetchedPackage:
    return FetchedPackage(spec, "1.0-1", root / "demo.deb", root, "GPL-2+")


def test_pk3_members_under_keep_are_unpacked_and_the_archive_dropped(tmp_path: Path) -> None:
    _zip(tmp_path / PK3, {"sound/ambient/water.ogg": b"w", "sound/ambient/readme.txt": b"t",
                          "sound/weapons/gun.wav": b"g", "sound/weather/rain_1.ogg": b"r"})
    (tmp_path / "usr/share/games/demo/loose.wav").write_bytes(b"l")
    spec = _spec(PK3 + "#sound/ambient/", PK3 + "#sound/weather/")
    assert fetch._wanted(PK3, spec) and not fetch._wanted("usr/share/games/x.pk3", spec)
    fetch._unpack_archives(tmp_path, spec, _no_tool)
    assert not (tmp_path / PK3).exists()
    found = {c.path: c.local.read_bytes() for c in scan(_package(tmp_path, spec))}
    assert found == {PK3 + "#sound/ambient/water.ogg": b"w",
                     PK3 + "#sound/weather/rain_1.ogg": b"r",
                     "usr/share/games/demo/loose.wav": b"l"}
    assert member_path(tmp_path, PK3 + "#sound/ambient/water.ogg").read_bytes() == b"w"


def test_a_member_outside_the_archive_folder_is_refused(tmp_path: Path) -> None:
    _zip(tmp_path / PK3, {"../../escape.ogg": b"x"})
    with pytest.raises(CorpusError, match="outside"):
        fetch._unpack_archives(tmp_path, _spec("usr/"), _no_tool)


def test_a_broken_pk3_says_so(tmp_path: Path) -> None:
    (tmp_path / PK3).parent.mkdir(parents=True)
    (tmp_path / PK3).write_bytes(b"not a zip")
    with pytest.raises(CorpusError, match="zip"):
        fetch._unpack_archives(tmp_path, _spec("usr/"), _no_tool)


FAKE_C4GROUP = """\
import os, sys, zipfile
path = sys.argv[1]
assert sys.argv[2] == "-x"
try:
    members = zipfile.ZipFile(path).namelist()
except zipfile.BadZipFile:
    print("Status: OpenRealGrpFile: Cannot open standard file")
    sys.exit(0)  # like c4group: exit 0 and leave the file alone
with zipfile.ZipFile(path) as zf:
    zf.extractall(path + ".tmp")
os.remove(path)
os.rename(path + ".tmp", path)
"""


def _fake_c4group(tmp_path: Path) -> Path:
    tool = tmp_path / "bin" / "c4group"
    tool.parent.mkdir()
    tool.write_text(f"#!{sys.executable}\n" + FAKE_C4GROUP)
    tool.chmod(0o755)
    return tool


def test_openclonk_groups_are_exploded_with_c4group(tmp_path: Path) -> None:
    root = tmp_path / "pkg"
    _zip(root / OCG, {"Environment.ocg/BirdsLoop.ogg": b"b",
                      "Environment.ocg/Lightning.ocg/Thunder1.ogg": b"t",
                      "Environment.ocg/notes.txt": b"n", "UI.ocg/Click.wav": b"c"})
    tool = _fake_c4group(tmp_path)
    asked: list[str] = []

    def tools(name: str) -> Path:
        asked.append(name)
        return tool

    spec = _spec(OCG + "#Environment.ocg/")
    fetch._unpack_archives(root, spec, tools)
    assert asked == ["c4group"] and not (root / OCG).exists()
    assert sorted(c.path for c in scan(_package(root, spec))) == [
        OCG + "#Environment.ocg/BirdsLoop.ogg", OCG + "#Environment.ocg/Lightning.ocg/Thunder1.ogg"]


def test_a_group_c4group_cannot_read_is_an_error(tmp_path: Path) -> None:
    (tmp_path / OCG).parent.mkdir(parents=True)
    (tmp_path / OCG).write_bytes(b"junk")
    tool = _fake_c4group(tmp_path)
    with pytest.raises(CorpusError, match=r"c4group could not unpack Sound\.ocg"):
        fetch._unpack_archives(tmp_path, _spec("usr/"), lambda _name: tool)


def _real_c4group() -> Path | None:
    found = shutil.which("c4group")
    if found:
        return Path(found)
    tools = sorted(fetch.default_cache_dir().glob("tools/openclonk_*/usr/bin/c4group"))
    return tools[-1] if tools else None


@pytest.mark.skipif(_real_c4group() is None, reason="no c4group (the openclonk package's tool)")
def test_a_group_packed_by_the_real_c4group_round_trips(tmp_path: Path) -> None:
    tool = _real_c4group()
    assert tool is not None
    group = tmp_path / "pkg" / OCG
    (group / "Environment.ocg").mkdir(parents=True)
    (group / "Environment.ocg" / "WindLoop.ogg").write_bytes(b"wind" * 100)
    (group / "Fire.ocg").mkdir()
    (group / "Fire.ocg" / "Blast1.wav").write_bytes(b"blast")
    subprocess.run([str(tool), group.name, "-p"], cwd=group.parent, check=True,
                   capture_output=True, env={"HOME": str(tmp_path)})
    assert group.is_file()
    spec = _spec(OCG + "#Environment.ocg/")
    fetch._unpack_archives(tmp_path / "pkg", spec, lambda _name: tool)
    found = {c.path: c.local.read_bytes() for c in scan(_package(tmp_path / "pkg", spec))}
    assert found == {OCG + "#Environment.ocg/WindLoop.ogg": b"wind" * 100}


def test_cat_members_keep_their_numbered_names(tmp_path: Path) -> None:
    cat = "usr/share/games/openttd/baseset/opensfx/opensfx.cat"
    out = tmp_path / fetch.MEMBERS_DIR / cat
    out.mkdir(parents=True)
    (out / "07.wav").write_bytes(b"RIFF")
    (out / "07.txt").write_text('Original "bus.wav" by X')
    spec = _spec("usr/share/games/openttd/")
    [cand] = scan(_package(tmp_path, spec))
    assert (cand.path, cand.title) == (cat + "#07", 'Original "bus.wav" by X')
    assert member_path(tmp_path, cat + "#07") == out / "07.wav"


COPYRIGHT = """\
Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/

Files: *
Copyright: The Team
License: GPL-2+

Files:
 base/sound/ambience/thunder?.ogg
 base/sound/ambience/water0*.ogg
Copyright: Someone
License: CC-BY-SA-3.0

Files: base/sound/ambience/water01.ogg
Copyright: Someone else
License: GPL-2
"""


def test_per_file_licences_follow_the_last_matching_stanza() -> None:
    assert dep5_file_licence(COPYRIGHT, "base/sound/ambience/thunder1.ogg") == "CC-BY-SA-3.0"
    assert dep5_file_licence(COPYRIGHT, "base/sound/ambience/water01.ogg") == "GPL-2"
    assert dep5_file_licence(COPYRIGHT, "base/sound/ambience/water02.ogg") == "CC-BY-SA-3.0"
    assert dep5_file_licence(COPYRIGHT, "base/sound/ambience/cricket.ogg") == "GPL-2+"
    assert dep5_match("*.ogg", "mtg/mods/a/b.ogg") and not dep5_match("a?c", "abbc")
    assert not dep5_match("data/[ab].ogg", "data/a.ogg")  # no character classes in DEP-5


def test_a_package_maps_its_files_to_the_copyright_paths(tmp_path: Path) -> None:
    spec = _spec(PK3 + "#sound/", dep5_paths=((PK3 + "#", "base/"),), licences=("CC-BY-SA-3.0",))
    pkg = FetchedPackage(spec, "1", tmp_path / "d.deb", tmp_path, "GPL-2+", COPYRIGHT)
    assert pkg.licence_of(PK3 + "#sound/ambience/thunder2.ogg") == "CC-BY-SA-3.0"
    assert pkg.licence_of(PK3 + "#sound/ambience/cricket.ogg") == "GPL-2+"
    assert pkg.licence_of("usr/share/games/demo/other.ogg") == "GPL-2+"
    with pytest.raises(CorpusError, match="GPL-2"):  # a licence the spec does not expect
        pkg.licence_of(PK3 + "#sound/ambience/water01.ogg")


def test_a_free_text_copyright_must_still_state_the_licence(tmp_path: Path) -> None:
    spec = _spec("usr/", statement="under the terms of the GNU General Public License")
    doc = tmp_path / "usr/share/doc/demo-data/copyright"
    doc.parent.mkdir(parents=True)
    doc.write_text("You may copy it under the terms of\n  the GNU General Public License.\n")
    assert package_licence(tmp_path, spec) == "GPL-2+"
    doc.write_text("All rights reserved.\n")
    with pytest.raises(CorpusError, match="no longer says"):
        package_licence(tmp_path, spec)
