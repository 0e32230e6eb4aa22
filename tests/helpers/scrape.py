"""Read a registry the way Prometheus does: exposition text, parsed back into samples."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def scrape(registry: CollectorRegistry) -> Samples:
    """{(sample name, sorted labels): value} from the text format."""
    text = generate_latest(registry).decode()
    samples: Samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def value(samples: Samples, name: str, **labels: str) -> float:
    key = (name, tuple(sorted(labels.items())))
    assert key in samples, f"no sample {name}{labels}"
    return samples[key]


def series(samples: Samples, name: str) -> dict[tuple[tuple[str, str], ...], float]:
    """Every sample of `name`, by its labels."""
    return {labels: v for (sample, labels), v in samples.items() if sample == name}
