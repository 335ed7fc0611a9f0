"""The graphql-transport-ws protocol as this server speaks it: Strawberry's handler, with
the refusals it sends coded like every other error."""

from __future__ import annotations

from graphql import GraphQLError
from strawberry.subscriptions.protocols.graphql_transport_ws.handlers import (
    BaseGraphQLTransportWSHandler,
)
from strawberry.subscriptions.protocols.graphql_transport_ws.types import (
    ConnectionInitMessage,
    ErrorMessage,
    SubscribeMessage,
)

from graph.context import Context

SUBSCRIPTION_LIMIT_CODE = "TOO_MANY_REQUESTS"


class TransportWSHandler(BaseGraphQLTransportWSHandler[Context, None]):
    """graphql-transport-ws with a null init payload taken as no payload, and the
    subscription limit answered with extensions.code."""

    async def handle_connection_init(self, message: ConnectionInitMessage) -> None:
        # The protocol allows a null payload: it carries no token, so it is refused like
        # any init without one (4403), not as a malformed message (4400).
        if message.get("payload", {}) is None:
            message = {"type": "connection_init"}
        await super().handle_connection_init(message)

    async def handle_subscribe(self, message: SubscribeMessage) -> None:
        limit = self.max_subscriptions_per_connection
        if (
            limit is not None
            and self.connection_acknowledged
            and message["id"] not in self.operations
            and len(self.operations) >= limit
        ):
            error = GraphQLError(
                f"At most {limit} subscriptions per connection",
                extensions={"code": SUBSCRIPTION_LIMIT_CODE},
            )
            refusal: ErrorMessage = {
                "id": message["id"],
                "type": "error",
                "payload": [error.formatted],
            }
            await self.send_message(refusal)
            return
        await super().handle_subscribe(message)
