"""The input rules and the small pure pieces: names, text, ids, emoji, mentions, rate limits."""

from __future__ import annotations

import pytest

from chat.files import sniff_image
from chat.ratelimit import RateLimiter, Throttle
from chat.rules import (
    RuleError,
    check_client_msg_id,
    check_emoji,
    check_file_name,
    check_room_name,
    check_text,
    check_user_name,
    mentions,
)
from chat.session import Session, SessionSigner, User


@pytest.mark.parametrize("name", ["alice", "Zoë", "j.doe", "x-y_z", "李雷", "a" * 24])
def test_good_user_names(name: str) -> None:
    assert check_user_name(f"  {name} ") == name


@pytest.mark.parametrize("name", ["", "  ", "two words", "bob.", "-bob", "a" * 25, "<b>", "@bob"])
def test_bad_user_names_name_the_rule(name: str) -> None:
    with pytest.raises(RuleError, match="a name is 1-24 characters"):
        check_user_name(name)


def test_room_names_are_lowercase_slugs() -> None:
    assert check_room_name(" dev-ops_2 ") == "dev-ops_2"
    for bad in ["Dev", "has space", "-x", "x-", "", "a" * 33, "../etc"]:
        with pytest.raises(RuleError, match="lowercase letters"):
            check_room_name(bad)


def test_text_is_trimmed_and_bounded() -> None:
    assert check_text("  hi\r\nthere \n") == "hi\nthere"
    assert check_text(" " + "x" * 4000 + " ") == "x" * 4000
    with pytest.raises(RuleError, match="must not be empty"):
        check_text(" \n\t ")
    with pytest.raises(RuleError, match="at most 4000 characters"):
        check_text("x" * 4001)
    # Characters, not bytes: 4000 emoji are fine.
    assert len(check_text("😀" * 4000)) == 4000


def test_client_msg_id_and_emoji() -> None:
    assert check_client_msg_id("a1_B-2") == "a1_B-2"
    for bad in ["", "x" * 65, "has space", "é"]:
        with pytest.raises(RuleError, match="client_msg_id"):
            check_client_msg_id(bad)
    assert check_emoji("👍🏽") == "👍🏽"
    assert check_emoji("👩‍💻") == "👩‍💻"
    for bad in ["", "a", ":+1:", "👍 👍", "😀" * 17]:
        with pytest.raises(RuleError, match="emoji"):
            check_emoji(bad)


def test_file_names_lose_paths_and_control_characters() -> None:
    assert check_file_name("../../etc/passwd") == "passwd"
    assert check_file_name("C:\\Users\\me\\report.pdf") == "report.pdf"
    assert check_file_name("a\x00b\nc.txt") == "abc.txt"
    assert check_file_name("") == "file"
    long = check_file_name("x" * 300 + ".tar.gz")
    assert len(long) <= 200
    assert long.endswith(".gz")


def test_mentions_follow_the_name_rule() -> None:
    assert mentions("hi @bob. and @Zoë, @bob again; mail me@example.com @@x") == ["bob", "Zoë"]
    assert mentions("@j.doe-2!") == ["j.doe-2"]
    assert mentions("no mentions") == []


def test_images_are_recognised_by_their_bytes_not_their_name() -> None:
    assert sniff_image(b"\x89PNG\r\n\x1a\n....") == "image/png"
    assert sniff_image(b"\xff\xd8\xff\xe0") == "image/jpeg"
    assert sniff_image(b"GIF89a") == "image/gif"
    assert sniff_image(b"RIFF\x00\x00\x00\x00WEBPVP8 ") == "image/webp"
    assert sniff_image(b"<svg xmlns=...") is None
    assert sniff_image(b"<html><script>") is None


def test_token_bucket_allows_a_burst_then_the_rate() -> None:
    now = [0.0]
    limiter = RateLimiter(rate=10, burst=20, clock=lambda: now[0])
    assert all(limiter.take("u") == 0 for _ in range(20))
    wait = limiter.take("u")
    assert 0 < wait <= 0.1
    assert limiter.take("someone else") == 0  # per user
    now[0] += 0.5  # five tokens come back
    assert all(limiter.take("u") == 0 for _ in range(5))
    assert limiter.take("u") > 0


def test_throttle_drops_repeats_within_the_interval() -> None:
    now = [0.0]
    throttle = Throttle(1.0, clock=lambda: now[0])
    assert throttle.allow("k")
    assert not throttle.allow("k")
    now[0] += 1.0
    assert throttle.allow("k")


def test_session_cookie_is_signed_and_expires() -> None:
    signer = SessionSigner(b"k" * 32, max_age=100)
    value = signer.dumps(Session(User("id1", "Zoë"), "sid1"), now=1000)
    assert signer.loads(value, now=1050) == Session(User("id1", "Zoë"), "sid1")
    assert signer.loads(value, now=1101) is None  # expired
    payload, _, sig = value.partition(".")
    assert signer.loads(payload + "." + sig[::-1], now=1050) is None  # forged signature
    assert signer.loads("garbage", now=1050) is None
    assert SessionSigner(b"o" * 32, max_age=100).loads(value, now=1050) is None  # another key
