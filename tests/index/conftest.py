"""Shared by the index tests: synthetic corpora with DB-like ids, one index of every kind, brute-force checks."""

import pytest

from index import builder, factory
from tests.helpers.index_data import D_DIM, NQ, N, db_ids, mixture, plan_for


@pytest.fixture(scope="module")
def corpus():
    x = mixture(N + NQ, D_DIM)
    return db_ids(N), x[:N], x[N:]


@pytest.fixture(scope="module")
def built(corpus):
    """One index of every kind, built once for the module (searches must not change them)."""
    ids, xb, _ = corpus
    source = builder.array_shards(ids, xb, shard_size=1000)
    return {kind: builder.build_index(source, D_DIM, plan_for(kind)) for kind in factory.KINDS}
