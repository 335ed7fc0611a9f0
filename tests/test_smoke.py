"""The server answers at all: login, viewer, a prospect."""

from helpers import Api, Team, add_prospect


async def test_viewer_is_the_signed_in_user(api: Api, team: Team) -> None:
    data = await api.data("{ viewer { email role } }", token=team.agent["token"])
    assert data["viewer"] == {"email": "agent1@test.example", "role": "agent"}


async def test_phone_is_stored_as_e164(api: Api, team: Team) -> None:
    prospect = await add_prospect(api, team.agent["token"], "(212) 555-0123")
    assert prospect["phone"] == "+12125550123"
