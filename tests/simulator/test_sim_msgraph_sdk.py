"""The Microsoft Graph SDK for Python (msgraph-sdk) lists message traces from the simulator unchanged."""

from __future__ import annotations

import asyncio
import warnings
from typing import Any

import httpx
import pytest
from sim_helpers import graph_filter, keys_of, window

from exotrace.simulator.server import Simulator

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    msgraph = pytest.importorskip("msgraph", reason="msgraph-sdk is a test extra (pip install -e '.[test]')")


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # the SDK's own deprecations, not ours
def test_sdk_lists_every_row_of_a_window(sim: Simulator) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        from kiota_abstractions.authentication import (
            AccessTokenProvider,
            AllowedHostsValidator,
            BaseBearerTokenAuthenticationProvider,
        )
        from kiota_abstractions.base_request_configuration import RequestConfiguration
        from msgraph import GraphRequestAdapter, GraphServiceClient
        from msgraph.generated.admin.exchange.tracing.message_traces.message_traces_request_builder import (
            MessageTracesRequestBuilder,
        )

    tenant = sim.tenant("contoso")
    start, end = window(sim, 2, 20)

    class SimTokens(AccessTokenProvider):  # type: ignore[misc]
        """Client credentials against the simulator's token endpoint."""

        async def get_authorization_token(self, uri: str, additional_authentication_context: Any = None) -> str:
            async with httpx.AsyncClient(verify=sim.ssl_context()) as c:
                r = await c.post(f"{sim.login_url}/{tenant.tenant_id}/oauth2/v2.0/token", data={
                    "grant_type": "client_credentials", "client_id": tenant.client_id,
                    "client_secret": tenant.client_secret, "scope": "https://graph.microsoft.com/.default"})
                return str(r.json()["access_token"])

        def get_allowed_hosts_validator(self) -> AllowedHostsValidator:
            return AllowedHostsValidator(["127.0.0.1"])

    async def run() -> list[Any]:
        async with httpx.AsyncClient(verify=sim.ssl_context(), timeout=30) as http:
            adapter = GraphRequestAdapter(BaseBearerTokenAuthenticationProvider(SimTokens()), client=http)
            adapter.base_url = f"{sim.graph_url}/v1.0"
            client = GraphServiceClient(request_adapter=adapter)
            builder = client.admin.exchange.tracing.message_traces
            params = MessageTracesRequestBuilder.MessageTracesRequestBuilderGetQueryParameters(
                filter=graph_filter(start, end), top=150)
            page = await builder.get(request_configuration=RequestConfiguration(query_parameters=params))
            items = list(page.value)
            while page.odata_next_link:
                page = await builder.with_url(page.odata_next_link).get()
                items += page.value
            return items

    items = asyncio.run(run())
    rows = [{"id": i.id, "recipientAddress": i.recipient_address} for i in items]
    truth = sim.ground_truth(tenant.tenant_id, start=start, end=end)
    assert len(rows) > 150 and sorted(keys_of(rows)) == sorted(truth)
    assert {i.status.value for i in items} >= {"delivered", "expanded", "failed"}
