"""Look-alike names and invisible characters (issue 14.9), through real uvicorn, on both stores.

``boss``, Cyrillic ``b\\u043ess`` and fullwidth ``\\uff42oss`` used to be three people in one room;
a right-to-left override (U+202E) and zero-width characters were accepted in text, names and
reactions. Now names are NFKC-normalised and compared by skeleton among the people online (on
Redis, across instances), text loses its bidi controls and zero-width spaces, and names and
reactions that carry them are refused with a 422 naming the character.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from chat import ChatSettings, create_app
from tests.rig import LiveServer, RedisServer

CYRILLIC_O = "\u043e"
FULLWIDTH_B = "\uff42"
RLO = "\u202e"
ZWSP = "\u200b"


@contextlib.contextmanager
def servers(kind: str, tmp_path: Path) -> Iterator[list[httpx.Client]]:
    with contextlib.ExitStack() as stack:
        url = stack.enter_context(RedisServer().running()).url if kind == "redis" else None
        out = []
        for i in range(2 if kind == "redis" else 1):
            d = tmp_path / f"i{i}"
            srv = stack.enter_context(
                LiveServer(functools.partial(create_app, d, settings=ChatSettings(), backend=url))
            )
            out.append(stack.enter_context(httpx.Client(base_url=srv.url, timeout=10)))
        yield out


def join(c: httpx.Client, name: str) -> httpx.Response:
    r = c.post("/chat/session", json={"name": name})
    c.cookies.clear()
    return r


@pytest.mark.parametrize("kind", ["sqlite", "redis"])
def test_look_alike_names_are_one_name_among_people_online(kind: str, tmp_path: Path) -> None:
    with servers(kind, tmp_path) as cs, httpx.Client(base_url=str(cs[0].base_url), timeout=10) as boss:
        assert boss.post("/chat/session", json={"name": "boss"}).status_code == 200
        other = cs[-1]  # on Redis: another instance
        for look_alike in [f"b{CYRILLIC_O}ss", f"{FULLWIDTH_B}oss", "BOSS", "b0ss", "\u0432oss".upper()]:
            r = join(other, look_alike)
            assert r.status_code == 409, (look_alike, r.text)
            assert "is taken by someone online" in r.json()["detail"]
        # NFKC: the fullwidth name is stored as plain letters.
        r = join(other, f"{FULLWIDTH_B}ob")
        assert r.status_code == 200
        assert r.json()["name"] == "bob"
        # Invisible and direction-changing characters are refused in names, and named.
        for hidden, code in [(ZWSP, "U+200B"), (RLO, "U+202E"), ("\u2066", "U+2066")]:
            r = join(other, f"bo{hidden}ss")
            assert r.status_code == 422
            assert code in r.json()["detail"]
            assert "invisible or direction-changing" in r.json()["detail"]
        # Once boss signs out, the name (and its look-alikes) is free.
        assert boss.delete("/chat/session").status_code == 204
        assert join(other, f"b{CYRILLIC_O}ss").status_code == 200


@pytest.mark.parametrize("kind", ["sqlite", "redis"])
def test_bidi_controls_and_zero_width_characters_are_dropped_or_refused(kind: str, tmp_path: Path) -> None:
    with servers(kind, tmp_path) as cs:
        c = cs[0]
        assert c.post("/chat/session", json={"name": "ada"}).status_code == 200
        sent = c.post(
            "/chat/rooms/general/messages",
            json={
                "text": f"pay {RLO}txt.exe{ZWSP} now \u2067x\u2069 \U0001f468\u200d\U0001f469",
                "client_msg_id": "m1",
            },
        )
        assert sent.status_code == 201, sent.text
        # Overrides, isolates and zero-width spaces gone; the emoji's zero-width joiner kept.
        assert sent.json()["text"] == "pay txt.exe now x \U0001f468\u200d\U0001f469"
        history = c.get("/chat/rooms/general/messages").json()["messages"]
        assert history[-1]["text"] == sent.json()["text"]
        # Nothing left after dropping them: empty, refused.
        r = c.post("/chat/rooms/general/messages", json={"text": f"{RLO}{ZWSP}", "client_msg_id": "m2"})
        assert r.status_code == 422
        assert "must not be empty" in r.json()["detail"]
        mid = sent.json()["id"]
        r = c.post(f"/chat/rooms/general/messages/{mid}/reactions", json={"emoji": f"{RLO}\U0001f44d"})
        assert r.status_code == 422
        assert "U+202E" in r.json()["detail"]
        r = c.post(f"/chat/rooms/general/messages/{mid}/reactions", json={"emoji": f"\U0001f44d{ZWSP}"})
        assert r.status_code == 422
        assert "U+200B" in r.json()["detail"]
        family = "\U0001f468\u200d\U0001f469\u200d\U0001f467"
        r = c.post(f"/chat/rooms/general/messages/{mid}/reactions", json={"emoji": family})
        assert r.status_code == 200
        assert r.json()["reactions"][0]["emoji"] == family
        # A file name that would show as "exe.jpg".
        up = c.post(
            "/chat/rooms/general/files",
            params={"name": f"photo{RLO}gpj.exe", "client_msg_id": "f1"},
            content=b"MZ\x90\x00",
            headers={"Content-Type": "application/octet-stream"},
        )
        assert up.status_code == 201, up.text
        assert up.json()["file"]["name"] == "photogpj.exe"
