"""A real-data source: emoji drawn by four design houses, named and described by Unicode CLDR.

``build_emoji_dataset(out)`` fetches the pinned npm packages (:mod:`.packages`), keeps the base
concepts with their CLDR names and keywords (:mod:`.concepts`), groups gendered and person
variants into families (:mod:`.families`), splits families by a salt (:mod:`.splits`) and writes
the drawings and the manifests (:mod:`.manifests`). Held-out concepts measure transfer to unseen
concepts; the held-out house (Facebook) measures robustness to another way of drawing.
"""

from training.emoji.build import build_emoji_dataset
from training.emoji.packages import EmojiFetchError
from training.emoji.splits import DEFAULT_SALT

__all__ = ["build_emoji_dataset", "EmojiFetchError", "DEFAULT_SALT"]
