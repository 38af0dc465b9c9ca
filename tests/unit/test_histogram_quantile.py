"""Quantiles from Prometheus histogram buckets (demo summary, consumer benchmark)."""

import pytest

from cdc_consumer.metrics import histogram_quantile

INF = float("inf")


def test_interpolates_inside_the_bucket_that_holds_the_rank():
    buckets = [(0.1, 50.0), (0.2, 100.0), (INF, 100.0)]
    assert histogram_quantile(0.5, buckets) == pytest.approx(0.1)
    assert histogram_quantile(0.75, buckets) == pytest.approx(0.15)


def test_observations_past_the_last_finite_bound_report_that_bound():
    assert histogram_quantile(0.99, [(1.0, 10.0), (INF, 100.0)]) == 1.0


def test_bucket_order_does_not_matter():
    assert histogram_quantile(0.5, [(INF, 4.0), (2.0, 4.0), (1.0, 2.0)]) == pytest.approx(1.0)
