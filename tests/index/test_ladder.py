"""index.ladder's tuning of a rung with a refine stage: the graph on SQ8 codes re-ranks a few times k."""

import numpy as np

from index import factory, ladder, query_aware, store
from tests.helpers.index_data import db_ids, mixture


def test_the_graph_rung_tunes_efsearch_then_the_least_reranking():
    n, d = 4000, 32
    xb, ids = mixture(n, d, seed=3), db_ids(n)
    xq = mixture(300, d, seed=4)
    plan = factory.make_plan("hnsw", n, d)
    assert plan.factory == "IDMap2,HNSW32,SQ8,Refine(Flat)" and plan.train_sample > 0
    index, _, rung, rungs = ladder.measure(ids, xb, ladder.Queries(xq[:150], same=xq[150:]), [plan], 0.95)
    assert [r.kind for r in rungs] == ["hnsw"] and rung.reached and rung.recall >= 0.95
    assert rung.extra["k_factor"] in ladder.GRAPH_K_FACTORS
    # the index keeps the chosen settings, and the sidecar records both
    assert store.search_params(index) == {"efSearch": rung.search_value, "k_factor": rung.extra["k_factor"]}
    assert query_aware.hnsw_of(index).efSearch == rung.search_value
    # the re-ranked distances are exact inner products of the stored float vectors
    D, I = index.search(xq[:5], 10)
    row = {int(i): r for r, i in enumerate(ids)}
    np.testing.assert_allclose(D, np.einsum("qd,qkd->qk", xq[:5], xb[[[row[int(i)] for i in q] for q in I]]), rtol=1e-5)
