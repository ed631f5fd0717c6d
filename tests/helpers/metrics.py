"""Reading a server's ``/metrics`` (Prometheus text) in tests."""

from __future__ import annotations

import httpx
from prometheus_client.parser import text_string_to_metric_families

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


async def scrape(http: httpx.AsyncClient) -> Samples:
    """Every sample of ``GET /metrics``, by (name, labels)."""
    response = await http.get("/metrics")
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain"), response.headers
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    """The sample ``name`` with exactly ``labels``; 0 when there is none yet."""
    return samples.get((name, frozenset(labels.items())), 0.0)


def buckets(samples: Samples, name: str, **labels: str) -> dict[str, float]:
    """A histogram's cumulative buckets, by their ``le`` bound."""
    wanted = set(labels.items())
    return {
        dict(key)["le"]: count
        for (sample, key), count in samples.items()
        if sample == f"{name}_bucket" and wanted <= set(key)
    }
