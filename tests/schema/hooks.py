"""Schemathesis hooks for the gateway's schema run (scripts/schema-check).

A valid `change_settings` patch is applied for real. Generated values for the
fields that say where the API listens and which keys open it would lock the
run out of the gateway it tests, so in positive cases they are pinned to the
gateway's current values, and connection limits below what the run's own
client needs are raised (the request stays valid; the other fields are
generated freely). Negative cases are sent as generated: they must be
rejected whole, which is one of the properties under test.
"""

import os
import re

import schemathesis
from schemathesis import GenerationMode

PINNED = {
    "api_port": int(os.environ["VDI_ST_API_PORT"]),
    "api_key": os.environ["VDI_ST_API_KEY"],
    "cli_key": os.environ["VDI_ST_CLI_KEY"],
    "internal_addrs": [os.environ["VDI_ST_ADDR"]],
    # The run holds its own gateway, so a disabled one changes nothing it
    # tests; kept on so the document stays useful for a look afterwards.
    "is_enabled": True,
}

# Limits the run's own client needs (its connection pool keeps connections
# idle between requests): valid values below these are raised to them.
FLOORS = {
    "max_connections": 64,
    "max_connections_per_client": 16,
    "http_header_timeout_secs": 10,
    "http_idle_timeout_secs": 30,
}


@schemathesis.hook
def before_call(ctx, case, kwargs):
    if case.operation.path != "/v3/change_settings/":
        return
    if case.meta is None or case.meta.generation.mode != GenerationMode.POSITIVE:
        return
    if isinstance(case.body, dict):
        for field, value in PINNED.items():
            if field in case.body:
                case.body[field] = value
        for field, floor in FLOORS.items():
            if isinstance(case.body.get(field), int) and case.body[field] < floor:
                case.body[field] = floor


# The rules JSON Schema cannot state: the cross-field rules of the settings
# (vdi_core::settings::validate) and a network with host bits set. A
# schema-valid patch may break only these; any other 422 means the document
# and the field rules disagree.
UNSTATABLE = [
    re.compile(p)
    for p in [
        r"^\d+ is above port_range_stop \d+$",
        r"^range \d+-\d+ overlaps .+ \(\d+\)$",
        r"^\d+ is the (service tunnel|HAProxy peers|service|HAProxy stats) port$",
        r"^must differ from api_key ",
        r'^".+" has host bits set \(did you mean .+\?\)$',
    ]
]


@schemathesis.check
def field_rules_in_schema(ctx, response, case):
    """A schema-valid settings patch is refused only by a cross-field rule."""
    if case.operation.path != "/v3/change_settings/" or response.status_code != 422:
        return None
    if case.meta is None or case.meta.generation.mode != GenerationMode.POSITIVE:
        return None
    fields = response.json().get("fields", [])
    other = [f for f in fields if not any(p.match(f.get("message", "")) for p in UNSTATABLE)]
    if not fields or other:
        raise AssertionError(f"schema-valid patch refused by a rule the schema does not state: {other or fields}")
    return None


@schemathesis.check
class every_operation_succeeds_once:
    """Each operation tested answered success at least once (200, or 101 for
    the WebSocket upgrade): the run reached the API's logic, not only its
    refusals."""

    def __init__(self):
        self.reached = set()
        self.tested = set()

    def after_response(self, ctx, response, case):
        self.tested.add(case.operation.label)
        if 200 <= response.status_code < 300 or response.status_code == 101:
            self.reached.add(case.operation.label)

    def after_run(self, ctx):
        missing = sorted(self.tested - self.reached)
        if missing:
            raise AssertionError(f"never answered success: {', '.join(missing)}")
