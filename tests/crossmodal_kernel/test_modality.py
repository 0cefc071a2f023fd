from __future__ import annotations

import pytest

from crossmodal_kernel.modality import MODALITIES, Modality, as_modality


def test_the_two_modalities_and_their_cross_modal_partner():
    assert MODALITIES == (Modality.IMAGE, Modality.TEXT) and Modality.IMAGE == "image"
    assert Modality.IMAGE.other is Modality.TEXT and Modality.TEXT.other is Modality.IMAGE


def test_bad_modality_names_the_accepted_ones():
    assert as_modality("text") is Modality.TEXT
    with pytest.raises(ValueError, match=r"\['image', 'text'\].*'audio'"):
        as_modality("audio")
