"""Uses a client generated from openapi/postern.json (openapi-python-client) against a running
control plane (over HTTPS): create a rule, list it, delete it, and check a refused write comes
back as a parsed problem. Usage: client_roundtrip.py <base-url> <admin-token> <ca.pem>; the
generated package must be importable (PYTHONPATH)."""

import sys

from postern_control_plane_client import AuthenticatedClient
from postern_control_plane_client.api.inbound import (
    create_inbound_rule,
    delete_inbound_rule,
    list_inbound_rules,
)
from postern_control_plane_client.models import Level, Problem, RuleInput, RuleResponse


def main(base: str, token: str, ca: str) -> None:
    client = AuthenticatedClient(base_url=base, token=token, verify_ssl=ca, raise_on_unexpected_status=True)

    created = create_inbound_rule.sync_detailed(
        client=client, body=RuleInput(match="Generated.Example.", level=Level.ENCRYPT, comment="from python")
    )
    assert created.status_code == 201, created
    rule = created.parsed
    assert isinstance(rule, RuleResponse), rule
    assert rule.match == "generated.example", rule.match
    assert rule.level == Level.ENCRYPT

    listed = list_inbound_rules.sync(client=client)
    assert [r.id for r in listed.items] == [rule.id], listed
    assert listed.next_cursor is None

    refused = create_inbound_rule.sync_detailed(
        client=client, body=RuleInput(match="10.0.0.0/33", level=Level.MAY)
    )
    assert refused.status_code == 422, refused.status_code
    assert isinstance(refused.parsed, Problem), refused.parsed
    assert refused.parsed.errors[0].pointer == "/match"

    deleted = delete_inbound_rule.sync_detailed(client=client, id=rule.id)
    assert deleted.status_code == 204, deleted.status_code
    assert list_inbound_rules.sync(client=client).items == []
    print("generated client: create, list, refuse, delete: ok")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], sys.argv[3])
