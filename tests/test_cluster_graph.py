"""A slide graph runs unchanged on dask.distributed process workers (the reader pickles)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from slidemask.io import open_slide

distributed = pytest.importorskip("distributed")


@pytest.mark.timeout(120)
def test_level_graph_on_process_cluster(synthetic_slide: Path) -> None:
    level = open_slide(synthetic_slide, chunk_size=512).levels[0]
    expected = (level[..., 1] < 200).sum(axis=0).compute(scheduler="threads")
    with (
        distributed.LocalCluster(
            n_workers=2,
            threads_per_worker=1,
            processes=True,
            host="127.0.0.1",
            dashboard_address=None,
            memory_limit="2GiB",
        ) as cluster,
        distributed.Client(cluster) as client,
    ):
        got = client.compute((level[..., 1] < 200).sum(axis=0)).result(timeout=90)
    np.testing.assert_array_equal(got, expected)
