"""The data layer in app.db.crud, on SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from app.db import crud
from app.db.crud import NewItem
from app.db.models import Item, Model
from app.db.session import make_session_factory


def _items(n: int, start: int = 0) -> list[NewItem]:
    return [NewItem(external_id=f"item-{i}", text=f"caption {i}") for i in range(start, start + n)]


# --- items ------------------------------------------------------------------


def test_add_items_is_idempotent_on_external_id(session):
    ids, skipped = crud.add_items(session, _items(3))
    assert len(ids) == 3 and skipped == 0
    session.commit()

    assert crud.add_items(session, _items(3)) == ([], 3)
    ids2, skipped2 = crud.add_items(session, _items(3, start=1))  # 1 and 2 exist, 3 is new
    assert len(ids2) == 1 and skipped2 == 2
    session.commit()
    assert crud.count_items(session) == 4
    assert crud.get_item(session, ids2[0]).external_id == "item-3"


def test_add_items_in_bulk_across_chunks(session):
    n = crud.INSERT_CHUNK * 2 + 7
    ids, skipped = crud.add_items(session, _items(n))
    assert (len(ids), skipped) == (n, 0)
    assert len(set(ids)) == n
    ids_again, skipped_again = crud.add_items(session, _items(n + 1))
    assert (len(ids_again), skipped_again) == (1, n)
    session.commit()
    assert crud.count_items(session) == n + 1


def test_add_items_with_duplicates_inside_one_batch(session):
    batch = [NewItem("a"), NewItem("b"), NewItem("a")]
    ids, skipped = crud.add_items(session, batch)
    assert (len(ids), skipped) == (2, 1)


def test_metadata_json_and_unicode_round_trip(engine, session):
    meta = {"tags": ["chat", "猫"], "size": {"w": 640, "h": 480}, "score": 0.5, "ok": True}
    caption = "Ein Hund 🐕 läuft — 犬が走る"
    [item_id], _ = crud.add_items(
        session,
        [NewItem("ü-1", source="upload", image_path="/img/ü.jpg", text=caption, metadata=meta)],
    )
    [bare_id], _ = crud.add_items(session, [NewItem("bare")])
    session.commit()

    with make_session_factory(engine)() as fresh:  # read back from the database, not the cache
        item = crud.get_item(fresh, item_id)
        assert item.meta == meta
        assert item.text == caption and item.image_path == "/img/ü.jpg"
        assert item.source == "upload" and item.external_id == "ü-1"
        assert item.created_at.tzinfo is not None
        # None is SQL NULL, not the JSON literal null.
        assert fresh.scalar(select(Item.id).where(Item.meta.is_(None))) == bare_id


def test_get_items_ignores_deleted_and_unknown(session):
    ids, _ = crud.add_items(session, _items(3))
    crud.get_item(session, ids[1]).deleted_at = datetime.now(UTC)
    session.commit()

    assert set(crud.get_items(session, ids + [10**9])) == {ids[0], ids[2]}
    assert crud.get_items(session, []) == {}
    assert crud.get_item(session, ids[1]) is None
    assert crud.count_items(session) == 2


def test_list_items_pages_in_id_order_with_total(session):
    ids, _ = crud.add_items(session, _items(7))
    crud.get_item(session, ids[0]).deleted_at = datetime.now(UTC)
    session.commit()

    page, total = crud.list_items(session, offset=0, limit=4)
    assert total == 6 and [i.id for i in page] == ids[1:5]
    page, total = crud.list_items(session, offset=4, limit=4)
    assert total == 6 and [i.id for i in page] == ids[5:]
    assert crud.list_items(session, offset=10, limit=4) == ([], 6)


def test_iter_item_batches_by_modality(session):
    crud.add_items(
        session,
        [
            NewItem("img", image_path="/a.jpg"),
            NewItem("txt", text="a text"),
            NewItem("pair", image_path="/b.jpg", text="a caption"),
            NewItem("gone", image_path="/c.jpg", text="deleted"),
            *[NewItem(f"more-{i}", image_path=f"/m{i}.jpg") for i in range(4)],
        ],
    )
    gone = session.scalars(select(Item).where(Item.external_id == "gone")).one()
    gone.deleted_at = datetime.now(UTC)
    session.commit()

    def walk(**kwargs) -> list[list[str]]:
        return [[i.external_id for i in b] for b in crud.iter_item_batches(session, **kwargs)]

    assert walk(batch_size=3, modality="text") == [["txt", "pair"]]
    assert walk(batch_size=3, modality="image") == [
        ["img", "pair", "more-0"],
        ["more-1", "more-2", "more-3"],
    ]
    everything = walk(batch_size=100)
    assert everything == [["img", "txt", "pair", "more-0", "more-1", "more-2", "more-3"]]
    pair_id = session.scalars(select(Item.id).where(Item.external_id == "pair")).one()
    assert walk(batch_size=100, after_id=pair_id, modality="image") == [["more-0", "more-1", "more-2", "more-3"]]
    with pytest.raises(ValueError, match="modality"):
        next(crud.iter_item_batches(session, 10, modality="audio"))


# --- models and indexes -----------------------------------------------------


def test_activate_model_retires_the_previous_one(session):
    assert crud.get_active_model(session) is None
    first = crud.create_model(session, "builtin:lit-mini", name="base")
    assert first.status == "candidate" and first.promoted_at is None
    crud.activate_model(session, first.id)
    session.commit()

    second = crud.create_model(
        session,
        "builtin:lit-mini@/ckpt/epoch_2.pt",
        checkpoint_path="/ckpt/epoch_2.pt",
        parent_id=first.id,
        eval_report={"before": {"r@1": 0.2}, "after": {"r@1": 0.4}},
    )
    assert crud.get_active_model(session).id == first.id  # a candidate changes nothing
    crud.activate_model(session, second.id)
    session.commit()

    session.expire_all()
    assert crud.get_active_model(session).id == second.id
    assert session.get(Model, first.id).status == "retired"
    assert second.promoted_at is not None and second.parent_id == first.id
    assert session.get(Model, second.id).eval_report["after"]["r@1"] == 0.4

    crud.activate_model(session, first.id)  # rollback to the older version
    session.commit()
    assert crud.get_active_model(session).id == first.id
    assert session.get(Model, second.id).status == "retired"
    with pytest.raises(LookupError):
        crud.activate_model(session, 10**9)


def test_create_model_as_active_goes_through_activation(session):
    old = crud.create_model(session, "test:tiny", status="active")
    new = crud.create_model(session, "test:tiny", status="active")
    session.commit()
    assert crud.get_active_model(session).id == new.id and old.status == "retired"
    with pytest.raises(ValueError, match="status"):
        crud.create_model(session, "test:tiny", status="bogus")


def test_database_allows_one_active_model(session):
    session.add_all([Model(spec="a", status="active"), Model(spec="b", status="active")])
    with pytest.raises(IntegrityError):
        session.flush()


def _index(session, model_id, modality="image", **kwargs):
    return crud.create_index(
        session,
        model_id=model_id,
        modality=modality,
        path=f"/data/indexes/{modality}",
        factory="IDMap2,Flat",
        dim=8,
        ntotal=100,
        **kwargs,
    )


def test_activate_index_retires_the_old_one_of_same_model_and_modality(session):
    model = crud.create_model(session, "test:tiny")
    other = crud.create_model(session, "test:tiny")
    old_image = _index(session, model.id, stats={"recall@10": 0.99, "memory_bytes": 3200})
    text = _index(session, model.id, modality="text", params={"nprobe": 8})
    other_image = _index(session, other.id)
    for index in (old_image, text, other_image):
        crud.activate_index(session, index.id)
    session.commit()
    assert {m: i.id for m, i in crud.get_active_indexes(session, model.id).items()} == {
        "image": old_image.id,
        "text": text.id,
    }

    new_image = _index(session, model.id)
    assert new_image.status == "building" and new_image.metric == "ip"
    crud.activate_index(session, new_image.id)
    session.commit()

    session.expire_all()
    active = crud.get_active_indexes(session, model.id)
    assert {m: i.id for m, i in active.items()} == {"image": new_image.id, "text": text.id}
    assert old_image.status == "retired"
    assert crud.get_active_indexes(session, other.id)["image"].id == other_image.id
    assert active["text"].params == {"nprobe": 8}
    with pytest.raises(ValueError, match="modality"):
        _index(session, model.id, modality="audio")


def test_get_hits_returns_light_rows_for_live_items_only(session):
    from datetime import UTC, datetime

    ids, _ = crud.add_items(
        session,
        [
            crud.NewItem(external_id=f"h{i}", text=f"t{i}", image_path=f"/x/{i}.png", metadata={"i": i})
            for i in range(3)
        ],
    )
    session.get(Item, ids[1]).deleted_at = datetime.now(UTC)
    session.commit()
    hits = crud.get_hits(session, [ids[0], ids[1], ids[2], ids[0], 10**9])
    assert sorted(hits) == [ids[0], ids[2]]
    row = hits[ids[2]]
    assert (row.external_id, row.text, row.image_path, row.meta) == ("h2", "t2", "/x/2.png", {"i": 2})
    assert crud.get_hits(session, []) == {}
