"""A tiny fake of the emoji packages and of npm, so the emoji tests need neither network nor npm.

The fake ``emoji-datasource`` table has the cases the real one has: gendered role variants, a
ZWJ family with the legacy codepoint it obsoletes, a selector (U+FE0F) that CLDR omits, a skin
variation, and rows that must be left out (a keycap, a country flag, a skin-tone component).
The fake ``npm`` copies tarballs out of a folder standing in for the registry, logs each call,
and fails like npm does when ``FAKE_NPM_FAIL`` says so.
"""

from __future__ import annotations

import io
import json
import tarfile
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

from training.emoji.packages import Package, Sources, integrity_of

HOUSES = ("apple", "google", "twitter", "facebook")

# unified, table name, short name, category, subcategory, CLDR name, keywords (None: not a concept)
ROWS = [
    ("0023-FE0F-20E3", "HASH KEY", "hash", "Symbols", "keycap", None, None),
    ("1F1EB-1F1F7", "France Flag", "flag-fr", "Flags", "country-flag", None, None),
    ("1F3FB", "EMOJI MODIFIER FITZPATRICK TYPE-1-2", "skin-tone-2", "Component", "skin-tone", None, None),
    ("1F600", "GRINNING FACE", "grinning", "Smileys & Emotion", "face-smiling", "grinning face", ["face", "grin"]),
    ("1F603", "SMILING FACE WITH OPEN MOUTH", "smiley", "Smileys & Emotion", "face-smiling",
     "grinning face with big eyes", ["face", "mouth", "smile"]),
    ("1F431", "CAT FACE", "cat", "Animals & Nature", "animal-mammal", "cat face", ["cat", "face", "pet"]),
    ("1F436", "DOG FACE", "dog", "Animals & Nature", "animal-mammal", "dog face", ["dog", "face", "pet"]),
    ("1F355", "SLICE OF PIZZA", "pizza", "Food & Drink", "food-prepared", "pizza", ["cheese", "slice"]),
    ("1F382", "BIRTHDAY CAKE", "birthday", "Food & Drink", "food-sweet", "birthday cake", ["birthday", "cake"]),
    ("2614-FE0F", "UMBRELLA WITH RAIN DROPS", "umbrella_with_rain_drops", "Travel & Places", "sky & weather",
     "umbrella with rain drops", ["rain", "umbrella"]),
    ("1F3C1", "CHEQUERED FLAG", "checkered_flag", "Flags", "flag", "chequered flag", ["racing", "chequered"]),
    ("1F44B", "WAVING HAND SIGN", "wave", "People & Body", "hand-fingers-open", "waving hand", ["hand", "wave"]),
    ("1F9D1-200D-1F373", "COOK", "cook", "People & Body", "person-role", "cook", ["chef", "cook"]),
    ("1F468-200D-1F373", "MAN COOK", "male-cook", "People & Body", "person-role", "man cook", ["chef", "man"]),
    ("1F469-200D-1F373", "WOMAN COOK", "female-cook", "People & Body", "person-role", "woman cook", ["chef"]),
    ("1F645", "FACE WITH NO GOOD GESTURE", "no_good", "People & Body", "person-gesture", "person gesturing NO",
     ["forbidden", "hand"]),
    ("1F645-200D-2642-FE0F", "MAN GESTURING NO", "man-gesturing-no", "People & Body", "person-gesture",
     "man gesturing NO", ["man", "hand"]),
    ("1F645-200D-2640-FE0F", "WOMAN GESTURING NO", "woman-gesturing-no", "People & Body", "person-gesture",
     "woman gesturing NO", ["woman", "hand"]),
    ("1F46A", "FAMILY", "family", "People & Body", "family", "family", ["family"]),
    ("1F468-200D-1F469-200D-1F466", "FAMILY: MAN, WOMAN, BOY", "man-woman-boy", "People & Body", "family",
     "family: man, woman, boy", ["boy", "family"]),
]  # fmt: skip
FACEBOOK_LACKS = "1F355"  # has_img_facebook is false
FACEBOOK_LOSES = "1F382"  # has_img_facebook is true, but the file is not in the tarball


def emoji_string(unified: str, keep_selector: bool = True) -> str:
    text = "".join(chr(int(p, 16)) for p in unified.split("-"))
    return text if keep_selector else text.replace("\ufe0f", "")


def emoji_table() -> list[dict]:
    table = []
    for sort_order, (unified, name, short, category, subcategory, _, _) in enumerate(ROWS):
        row = {
            "name": name,
            "unified": unified,
            "image": unified.lower() + ".png",
            "short_name": short,
            "short_names": [short],
            "category": category,
            "subcategory": subcategory,
            "sort_order": sort_order,
        }
        row |= {f"has_img_{h}": not (h == "facebook" and unified == FACEBOOK_LACKS) for h in HOUSES}
        table.append(row)
    by_code = {r["unified"]: r for r in table}
    by_code["1F46A"]["obsoleted_by"] = "1F468-200D-1F469-200D-1F466"
    by_code["1F468-200D-1F469-200D-1F466"]["obsoletes"] = "1F46A"
    by_code["1F44B"]["skin_variations"] = {"1F3FB": {"unified": "1F44B-1F3FB", "image": "1f44b-1f3fb.png"}}
    return table


def cldr_tables() -> tuple[dict, dict]:
    """(annotations, annotationsDerived) as CLDR's JSON packages lay them out; keys without U+FE0F."""
    single, derived = {}, {}
    for unified, *_, name, keywords in ROWS:
        if name is None:
            continue
        table = derived if "200D" in unified else single
        table[emoji_string(unified, keep_selector=False)] = {"default": keywords, "tts": [name]}
    derived[emoji_string("1F44B-1F3FB")] = {"default": ["hand"], "tts": ["waving hand: light skin tone"]}
    return (
        {"annotations": {"identity": {}, "annotations": single}},
        {"annotationsDerived": {"identity": {}, "annotations": derived}},
    )


def _png(seed: int, house: int) -> bytes:
    buf = io.BytesIO()
    Image.new("RGBA", (4, 4), (seed * 11 % 256, house * 60, 100, 255 if seed % 2 else 128)).save(buf, format="PNG")
    return buf.getvalue()


def _tarball(path: Path, members: dict[str, bytes]) -> Path:
    with tarfile.open(path, "w:gz") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size, info.mtime = len(data), 0
            tar.addfile(info, io.BytesIO(data))
    return path


def _dumps(value) -> bytes:
    return json.dumps(value, ensure_ascii=False).encode()


@dataclass
class FakeNpm:
    registry: Path
    bin: Path
    log: Path
    sources: Sources

    def calls(self) -> list[list[str]]:
        return [json.loads(line) for line in self.log.read_text().splitlines()] if self.log.exists() else []


NPM_SCRIPT = """#!{python}
import json, os, shutil, sys
args = sys.argv[1:]
with open(os.environ["FAKE_NPM_LOG"], "a") as log:
    log.write(json.dumps(args) + "\\n")
fail = os.environ.get("FAKE_NPM_FAIL")
if fail:
    sys.stderr.write(f"npm error code {{fail}}\\nnpm error syscall connect\\nnpm error errno {{fail}}\\n"
                     f"npm error request to https://registry.npmjs.org/x failed, reason: {{fail}}\\n")
    sys.exit(1)
dest = args[args.index("--pack-destination") + 1]
for spec in args[1:args.index("--pack-destination")]:
    name, version = spec.rsplit("@", 1)
    shutil.copy(os.path.join(os.environ["FAKE_NPM_REGISTRY"], f"{{name}}-{{version}}.tgz"), dest)
"""


def build_registry(root: Path) -> Sources:
    """Fake tarballs for every package, and :class:`Sources` pinned to their checksums."""
    root.mkdir(parents=True, exist_ok=True)
    annotations, derived = cldr_tables()
    contents = {
        "emoji-datasource": {"package/package.json": b"{}", "package/emoji.json": _dumps(emoji_table())},
        "cldr-annotations-full": {"package/annotations/en/annotations.json": _dumps(annotations)},
        "cldr-annotations-derived-full": {"package/annotationsDerived/en/annotations.json": _dumps(derived)},
    }
    for h, house in enumerate(HOUSES):
        members = {f"package/img/{house}/32/{r[0].lower()}.png": b"not ours" for r in ROWS}
        for i, row in enumerate(ROWS):
            if house != "facebook" or row[0] not in (FACEBOOK_LACKS, FACEBOOK_LOSES):
                members[f"package/img/{house}/64/{row[0].lower()}.png"] = _png(i, h)
        contents[f"emoji-datasource-{house}"] = members
    pins = {}
    for name, members in contents.items():
        path = _tarball(root / f"{name}-1.0.0.tgz", members)
        pins[name] = Package(name, "1.0.0", integrity_of(path))
    houses = tuple((h, pins[f"emoji-datasource-{h}"]) for h in HOUSES)
    return Sources(
        pins["emoji-datasource"], pins["cldr-annotations-full"], pins["cldr-annotations-derived-full"], houses
    )
