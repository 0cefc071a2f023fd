"""A thesaurus from a WordNet 3.x database, for caption augmentation by word substitution.

A frozen text tower knows only what its pretraining taught it: the packaged MiniLM does not place
"azure" near "blue" (docs/findings.md, F21), so no head trained on captions that never say "azure"
can answer a query that does. Substituting a caption's words with their WordNet alternatives at
training time (EDA's synonym replacement; Wei & Zou, 2019) shows the heads those words, with the
image they describe, before a user types them.

A word's *alternatives* are, over every sense WordNet lists for it:

- its synonyms (the other lemmas of the word's synsets);
- for an adjective, the lemmas of its *similar-to* synsets ("minuscule" for "small");
- for a noun, the lemmas of its hyponyms down to ``depth`` levels (kinds of it: "azure" and
  "sapphire" under the colour "blue", "pentagram" under the shape "star"). A hyponym is the safe
  direction: a caption that says "a sapphire square" of a blue square is still true of it;
  a hypernym ("a chromatic square") would say less than the caption did.

WordNet lists every sense, so a word also gets alternatives from senses the caption does not mean
("depressed" for "blue"). They add noise, not wrong answers: no query says "a depressed square".

The database is read from its plain files (``data.noun``, ``data.adj``, ``data.verb``,
``data.adv``; the format of the WordNet ``wndb(5)`` manual page). Where to find them:
:func:`find_wordnet` looks in ``$CROSSMODAL_WORDNET_DIR``, NLTK's data folders
(``python -m nltk.downloader wordnet``) and Debian's ``/usr/share/wordnet``
(``apt-get install wordnet-base``). NLTK's own reader is not used: it also needs a ``lexnames``
file that Debian's package does not ship, and all this needs is two pointer kinds (docs/design.md).
"""

from __future__ import annotations

import os
import random
from collections import defaultdict
from collections.abc import Iterable
from functools import lru_cache
from pathlib import Path

_FILES = {"n": "data.noun", "v": "data.verb", "a": "data.adj", "r": "data.adv"}
_SIMILAR, _HYPONYM = "&", "~"
NLTK_SUBDIR = Path("corpora") / "wordnet"
DEBIAN_DIR = Path("/usr/share/wordnet")


class WordNetMissing(FileNotFoundError):
    """No WordNet database where one was looked for; the message says how to install one."""


def candidate_dirs() -> list[Path]:
    """Where :func:`find_wordnet` looks, in order."""
    out = []
    if os.environ.get("CROSSMODAL_WORDNET_DIR"):
        out.append(Path(os.environ["CROSSMODAL_WORDNET_DIR"]))
    nltk_roots = [p for p in os.environ.get("NLTK_DATA", "").split(os.pathsep) if p]
    nltk_roots += [str(Path.home() / "nltk_data"), "/usr/share/nltk_data", "/usr/local/share/nltk_data"]
    out += [Path(r) / NLTK_SUBDIR for r in nltk_roots]
    out.append(DEBIAN_DIR)
    return out


def find_wordnet(root: str | Path | None = None) -> Path:
    """The folder holding WordNet's ``data.*`` files: ``root`` itself, or the first of :func:`candidate_dirs`."""
    tried = [Path(root)] if root else candidate_dirs()
    for d in tried:
        if (d / _FILES["n"]).is_file():
            return d
    raise WordNetMissing(
        "no WordNet database (data.noun, data.adj, ...) in " + ", ".join(str(d) for d in tried) + ". Install "
        "one with `apt-get install wordnet-base` (Debian/Ubuntu) or `python -m nltk.downloader wordnet`, or set "
        "CROSSMODAL_WORDNET_DIR to a folder holding WordNet 3.x's data files."
    )


class Thesaurus:
    """Word -> alternatives from a WordNet database (see the module docstring)."""

    def __init__(self, root: str | Path | None = None, depth: int = 3):
        if depth < 0:
            raise ValueError(f"depth must be >= 0, got {depth}")
        self.root, self.depth = find_wordnet(root), depth
        self._lemmas: dict[tuple[str, str], tuple[str, ...]] = {}
        self._pointers: dict[tuple[str, str], tuple[tuple[str, tuple[str, str]], ...]] = {}
        self._senses: dict[str, list[tuple[str, str]]] = defaultdict(list)
        self._alternatives: dict[str, tuple[str, ...]] = {}  # memo: substitution asks for the same words often
        for pos, name in _FILES.items():
            path = self.root / name
            if path.is_file():
                self._read(pos, path)

    def _read(self, pos: str, path: Path) -> None:
        # offset lex_filenum ss_type w_cnt(hex) [word lex_id]... p_cnt [symbol offset pos src/tgt]... | gloss
        with open(path, encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.startswith(" "):  # the licence header
                    continue
                fields = line.split(" | ", 1)[0].split()
                n_words = int(fields[3], 16)
                words = tuple(_word(fields[4 + 2 * i]) for i in range(n_words))
                at = 4 + 2 * n_words
                pointers = []
                for j in range(int(fields[at])):
                    symbol, offset, target_pos = fields[at + 1 + 4 * j : at + 4 + 4 * j]
                    pointers.append((symbol, ("a" if target_pos == "s" else target_pos, offset)))
                key = (pos, fields[0])
                self._lemmas[key], self._pointers[key] = words, tuple(pointers)
                for w in words:
                    self._senses[w].append(key)

    def __contains__(self, word: str) -> bool:
        return _key(word) in self._senses

    def alternatives(self, word: str) -> tuple[str, ...]:
        """Other words for ``word`` (sorted, without ``word``); empty when WordNet does not know it."""
        word = _key(word)
        if word not in self._alternatives:
            self._alternatives[word] = self._find_alternatives(word)
        return self._alternatives[word]

    def _find_alternatives(self, word: str) -> tuple[str, ...]:
        found: set[str] = set()
        for key in self._senses.get(word, ()):
            found.update(self._lemmas[key])
            if key[0] == "a":
                found.update(w for s in self._linked(key, _SIMILAR, 1) for w in self._lemmas[s])
            elif key[0] == "n":
                found.update(w for s in self._linked(key, _HYPONYM, self.depth) for w in self._lemmas[s])
        found.discard(word)
        return tuple(sorted(found))

    def _linked(self, key: tuple[str, str], symbol: str, depth: int) -> Iterable[tuple[str, str]]:
        front, seen = [key], {key}
        for _ in range(depth):
            front = [t for k in front for s, t in self._pointers.get(k, ()) if s == symbol and t not in seen]
            seen.update(front)
            yield from front

    def substitute(self, text: str, p: float, rng: random.Random) -> str:
        """``text`` with each word (or two-word phrase WordNet knows) replaced with probability ``p``
        by one of its alternatives, drawn uniformly; words WordNet does not know stay."""
        words, out, i = text.split(), [], 0
        while i < len(words):
            span = 2 if i + 1 < len(words) and f"{words[i]} {words[i + 1]}" in self else 1
            phrase = " ".join(words[i : i + span])
            core = phrase.strip(_PUNCTUATION)
            known = core and core.lower() not in STOP_WORDS
            options = self.alternatives(core) if known and rng.random() < p else ()
            if options:
                lead = phrase[: len(phrase) - len(phrase.lstrip(_PUNCTUATION))]
                tail = phrase[len(phrase.rstrip(_PUNCTUATION)) :]
                out.append(lead + options[rng.randrange(len(options))] + tail)
            else:
                out.append(phrase)
            i += span
        return " ".join(out)


_PUNCTUATION = ",.;:!?\"'()"
# Function words: WordNet lists "a" (adenine), "in" (indium, Indiana) and "it" (information technology)
# as nouns. EDA keeps a stop list for the same reason.
STOP_WORDS = frozenset(
    "a an the this that these those there here is are was were be been being am has have had do does did "
    "of in on at to for from by with without into onto over under up down out off near as and or but nor "
    "so if then than it its it's he she they them his her their we us our you your i me my one ones "
    "which who whom whose what where when why how all any each some no not very can will just".split()
)


def _word(lemma: str) -> str:
    # An adjective's lemma may carry a syntactic marker, "galore(ip)".
    return lemma.split("(", 1)[0].replace("_", " ").lower()


def _key(word: str) -> str:
    return word.strip(_PUNCTUATION).lower().replace("_", " ")


def load_thesaurus(root: str | None = None, depth: int = 3) -> Thesaurus:
    """One :class:`Thesaurus` per WordNet folder and depth and process: reading WordNet takes about a
    second. The folder is found first, so a changed ``$CROSSMODAL_WORDNET_DIR`` is seen."""
    return _load(find_wordnet(root), depth)


@lru_cache(maxsize=4)
def _load(root: Path, depth: int) -> Thesaurus:
    return Thesaurus(root, depth)


__all__ = ["Thesaurus", "WordNetMissing", "candidate_dirs", "find_wordnet", "load_thesaurus"]
