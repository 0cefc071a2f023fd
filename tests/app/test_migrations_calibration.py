"""Migration 0005 (each model's relevance calibration): models already there get none, the column holds
JSON, and it goes down and up again."""

from __future__ import annotations

from sqlalchemy import inspect, text

from app.db import crud
from app.db.session import downgrade, make_engine, make_session_factory, upgrade


def test_upgrade_adds_an_empty_calibration_and_downgrade_removes_it(db_url):
    upgrade(db_url, "0004")
    engine = make_engine(db_url)
    try:
        with engine.begin() as connection:
            connection.execute(text("INSERT INTO models (spec, status) VALUES ('test:tiny', 'active')"))
        upgrade(engine)
        assert "calibration" in {c["name"] for c in inspect(engine).get_columns("models")}
        with make_session_factory(engine)() as session:
            model = crud.get_active_model(session)
            assert model is not None and model.calibration is None  # none fitted yet: relevance is null
            model.calibration = {"status": "fitted", "directions": {"text->image": {"map": {"method": "platt"}}}}
            session.commit()
        with make_session_factory(engine)() as session:
            stored = crud.get_active_model(session).calibration
            assert stored["directions"]["text->image"]["map"] == {"method": "platt"}
        downgrade(engine, "0004")
        assert "calibration" not in {c["name"] for c in inspect(engine).get_columns("models")}
        with engine.connect() as connection:  # the model row itself is kept
            assert connection.execute(text("SELECT spec FROM models")).scalar() == "test:tiny"
        upgrade(engine)
        with make_session_factory(engine)() as session:
            assert crud.get_active_model(session).calibration is None
    finally:
        engine.dispose()
