"""Contract fuzzing: schemathesis generates requests from openapi/openapi.json and runs them
against the live application; no 5xx and no answer outside the documented contract."""

from __future__ import annotations

import json
from pathlib import Path

import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.specs.openapi.checks import positive_data_acceptance

from service.app import build
from service.settings import Settings
from tests.conftest import NO_RATE_LIMITS

LENIENT = {"GET /pks/lookup"}
SPEC = json.loads((Path(__file__).resolve().parents[1] / "openapi" / "openapi.json").read_text())


def test_contract(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'contract.sqlite3'}"
    app = build(Settings(database_url=url, dispatch_mail=False, **NO_RATE_LIMITS))
    schema = schemathesis.openapi.from_dict(SPEC)
    schema = schema.exclude(operation_id="wkd_check")  # it resolves names on the network
    schema.app = app
    failures = []
    for result in schema.get_all_operations():
        operation = result.ok()

        @settings(
            max_examples=40, deadline=None, suppress_health_check=list(HealthCheck), database=None
        )
        @given(case=operation.as_strategy())
        def run(case: schemathesis.Case) -> None:
            # A string that fits the schema need not be an OpenPGP key, a token we issued or
            # a search we can answer: refusing those with 400 is the contract, not a bug.
            lenient = case.operation.method.upper() == "POST" or case.operation.label in LENIENT
            case.call_and_validate(
                app=app, excluded_checks=[positive_data_acceptance] if lenient else []
            )

        try:
            run()
        except Exception as exc:
            failures.append(f"{operation.label}: {exc}")
    assert not failures, "\n\n".join(failures)
