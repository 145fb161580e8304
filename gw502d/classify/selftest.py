"""Run the catalog's own example lines, as ``gw502d patterns test`` and the test suite do."""

from __future__ import annotations

from gw502d.classify.catalog import Catalog, Example
from gw502d.classify.matcher import Classifier


def check_example(classifier: Classifier, example: Example, where: str) -> str | None:
    """None when *example* classifies as it says, else a message naming what differs."""
    hit = classifier.classify(example.line.encode("utf-8", "surrogateescape"))
    got = hit.incident.id if hit else None
    if got != example.incident:
        return f"{where}: expected {example.incident or 'no incident'}, got {got or 'none'}: " \
               f"{example.line[:120]}"
    if hit is not None:
        wrong = {k: (v, hit.facts.get(k)) for k, v in example.fields.items()
                 if hit.facts.get(k) != v}
        if wrong:
            detail = ", ".join(f"{k}: expected {v!r}, got {g!r}" for k, (v, g) in wrong.items())
            return f"{where}: {detail}: {example.line[:120]}"
    return None


def check_examples(catalog: Catalog, only_files: set[str] | None = None) -> tuple[list[str], int]:
    """(failure messages, number of examples) for every example of the catalog's files."""
    classifier = Classifier(catalog)
    failures: list[str] = []
    total = 0
    for family in catalog.families:
        cases = [(f"{i.path}: {i.id}", i.path, ex) for i in family.incidents for ex in i.examples]
        cases += [(f"{family.path}: benign", family.path, ex) for ex in family.benign]
        for where, path, example in cases:
            if only_files is not None and path not in only_files:
                continue
            total += 1
            failure = check_example(classifier, example, where)
            if failure is not None:
                failures.append(failure)
    return failures, total
