"""training.thesaurus on a hand-written WordNet database in the real file format, and on Debian's where installed."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from training.config import TextAugmentConfig
from training.text_augment import TextAugmenter
from training.thesaurus import DEBIAN_DIR, Thesaurus, WordNetMissing, find_wordnet

# Lines as wndb(5) writes them: offset lex_filenum ss_type w_cnt(hex) [word lex_id]... p_cnt [pointer]... | gloss
HEADER = "  1 This software and database is being provided to you, the LICENSEE, by Princeton University\n"
NOUNS = [
    # blue (the colour) -> hyponyms azure (-> hyponym sky blue) and sapphire
    "00000100 07 n 02 blue 0 blueness 0 002 ~ 00000200 n 0000 ~ 00000300 n 0000 | the colour of the sky",
    "00000200 07 n 02 azure 0 cerulean 0 002 @ 00000100 n 0000 ~ 00000400 n 0000 | a light shade of blue",
    "00000300 07 n 01 sapphire 0 001 @ 00000100 n 0000 | a deep blue",
    "00000400 07 n 02 sky_blue 0 powder_blue 0 001 @ 00000200 n 0000 | a pale blue",
    "00000500 06 n 01 square 0 000 | a plane figure with four equal sides",
    "00000600 06 n 02 plus_sign 0 plus 0 000 | the sign +",
    "00000700 27 n 01 a 0 000 | adenine, a purine base",
]
ADJECTIVES = [
    # small -> similar to minuscule -> similar to (second hop, not followed) atomic
    "00001000 00 a 02 small 0 little 0 001 & 00001100 s 0000 | limited in size",
    "00001100 00 s 02 minuscule 0 miniscule 0 002 & 00001000 a 0000 & 00001200 s 0000 | very small",
    "00001200 00 s 01 atomic 0 001 & 00001100 s 0000 | of the smallest size",
    "00001300 00 a 01 galore(ip) 0 000 | in plenty",
]


def write_wordnet(root: Path) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "data.noun").write_text(HEADER + "\n".join(NOUNS) + "\n")
    (root / "data.adj").write_text(HEADER + "\n".join(ADJECTIVES) + "\n")
    return root


@pytest.fixture
def wordnet(tmp_path) -> Path:
    return write_wordnet(tmp_path / "wordnet")


def test_synonyms_hyponyms_and_similar_adjectives(wordnet):
    th = Thesaurus(wordnet, depth=3)
    assert th.alternatives("blue") == ("azure", "blueness", "cerulean", "powder blue", "sapphire", "sky blue")
    assert th.alternatives("Azure") == ("cerulean", "powder blue", "sky blue")  # hyponyms only, never hypernyms
    assert th.alternatives("small") == ("little", "miniscule", "minuscule")  # one similar-to hop, not "atomic"
    assert th.alternatives("galore") == ()  # the syntactic marker is not part of the lemma
    assert "galore" in th and "plus sign" in th
    assert th.alternatives("unknown") == ()


def test_hyponym_depth_is_bounded(wordnet):
    assert Thesaurus(wordnet, depth=1).alternatives("blue") == ("azure", "blueness", "cerulean", "sapphire")
    assert Thesaurus(wordnet, depth=0).alternatives("blue") == ("blueness",)
    with pytest.raises(ValueError, match="depth"):
        Thesaurus(wordnet, depth=-1)


def test_substitute_replaces_known_words_and_keeps_the_rest(wordnet):
    th = Thesaurus(wordnet)
    text = "a small blue square, in the plus sign."
    assert th.substitute(text, 0.0, random.Random(0)) == text
    out = th.substitute(text, 1.0, random.Random(0)).split()
    assert out[0] == "a"  # a stop word, though WordNet knows "a" (adenine)
    assert out[1] in th.alternatives("small")
    assert out[2] in th.alternatives("blue")
    assert out[3] == "square,"  # no alternative: kept, punctuation and all
    assert out[4:6] == ["in", "the"]
    assert " ".join(out).endswith(".") and "plus sign" not in " ".join(out)  # the two-word phrase went as one


def test_substitute_is_a_function_of_the_rng(wordnet):
    th = Thesaurus(wordnet)
    draws = {th.substitute("small blue", 0.5, random.Random(f"s:{i}")) for i in range(40)}
    assert draws == {th.substitute("small blue", 0.5, random.Random(f"s:{i}")) for i in range(40)}
    assert len(draws) > 5  # and it does vary


def test_find_wordnet_order_and_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv("CROSSMODAL_WORDNET_DIR", str(write_wordnet(tmp_path / "mine")))
    assert find_wordnet() == tmp_path / "mine"
    with pytest.raises(WordNetMissing, match="apt-get install wordnet-base"):
        find_wordnet(tmp_path / "nothing-here")


def test_text_augmenter_substitutes_deterministically(wordnet):
    cfg = TextAugmentConfig(synonyms=1.0, wordnet_dir=str(wordnet))
    assert cfg.enabled
    aug = TextAugmenter(cfg, seed=3)
    first = aug("a small blue square", [], [], epoch=0, index=5)
    assert first == aug("a small blue square", [], [], epoch=0, index=5)
    assert first != "a small blue square" and first.endswith("square")
    epochs = {aug("a small blue square", [], [], epoch=e, index=5) for e in range(20)}
    assert len(epochs) > 3


def test_text_augmenter_fails_up_front_without_wordnet(tmp_path):
    with pytest.raises(WordNetMissing):
        TextAugmenter(TextAugmentConfig(synonyms=0.3, wordnet_dir=str(tmp_path)), seed=0)


@pytest.mark.skipif(not (DEBIAN_DIR / "data.noun").is_file(), reason="Debian's wordnet-base is not installed")
def test_debian_wordnet_knows_colour_and_size_words():
    th = Thesaurus(DEBIAN_DIR)
    assert {"scarlet", "crimson"} <= set(th.alternatives("red"))
    assert {"azure", "sapphire"} <= set(th.alternatives("blue"))  # hyponyms of the colour
    assert "minuscule" in th.alternatives("small")  # a similar adjective


def test_load_thesaurus_finds_the_folder_before_its_cache(tmp_path, monkeypatch):
    from training.thesaurus import load_thesaurus

    monkeypatch.setenv("CROSSMODAL_WORDNET_DIR", str(write_wordnet(tmp_path / "one")))
    first = load_thesaurus()
    assert first is load_thesaurus() and first.root == tmp_path / "one"
    monkeypatch.setenv("CROSSMODAL_WORDNET_DIR", str(write_wordnet(tmp_path / "two")))
    assert load_thesaurus().root == tmp_path / "two"
