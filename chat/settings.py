"""Limits and tuning for the chat app, in one place so tests and deployments can change them."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["ChatSettings"]

MIB = 1024 * 1024


@dataclass(frozen=True, slots=True)
class ChatSettings:
    """Every knob has a default a small team can live with."""

    # Message text, after trimming (counted in Unicode code points).
    max_text: int = 4000
    # Uploads larger than this are refused with 413.
    max_file_bytes: int = 10 * MIB
    # Per-user token bucket for everything that writes: `rate` tokens a second, `burst` at most.
    rate: float = 10.0
    burst: int = 20
    # The caps below are per client address (issue 14.4): what one client can spend however many
    # sessions it makes. The address is the connection's, or X-Forwarded-For's from a trusted
    # proxy with --proxy-headers; loopback is exempt unless `limit_loopback`.
    # Every write from one address (all its sessions together), read markers included.
    address_rate: float = 20.0
    address_burst: int = 40
    # Joins (POST /chat/session, renames too) from one address: bursts of 10, then one every 5 s.
    join_rate: float = 0.2
    join_burst: int = 10
    # Rooms made by one person, and by one address: bursts of 5, then one a minute.
    room_rate: float = 1 / 60
    room_burst: int = 5
    limit_loopback: bool = False
    max_rooms: int = 100
    # Rooms one person, and one address, may hold at once (they may delete their empty ones).
    max_rooms_per_person: int = 5
    max_rooms_per_address: int = 10
    # A user-made room with no message and nothing new for this long is deleted (checked every
    # `room_sweep_interval` seconds); the default rooms never are.
    empty_room_ttl: float = 24 * 3600.0
    room_sweep_interval: float = 600.0
    # People in one room at once (those with it open, and those in their grace period). One more
    # is refused with 409 when opening the room's stream; someone already in it (another tab, a
    # reconnect) never is.
    max_room_members: int = 2000
    # ...and at most this many of them from one client address (fake members cost one join
    # each, so one address could fill a room: issue 14.4).
    max_room_members_per_address: int = 20
    max_room_name: int = 32
    max_user_name: int = 24
    # Distinct emoji on one message; stops a message from growing a wall of reactions.
    max_reactions: int = 20
    page_size: int = 50
    max_page_size: int = 200
    # A vanished client (closed tab, lost network) leaves the room after this many seconds, so a
    # page reload or a reconnect does not flash "left"/"joined" at everybody.
    presence_grace: float = 5.0
    # A display name stays reserved this long after its holder's last request; leaving their last
    # room (last stream closed, grace over) frees it sooner (chat.names: Names.gone).
    name_ttl: float = 60.0
    # Typing events from one person in one room are dropped if closer together than this.
    typing_interval: float = 1.0
    session_max_age: int = 30 * 24 * 3600
    # Set when served over HTTPS (behind a TLS proxy), so the browser never sends it in clear.
    secure_cookie: bool = False
    default_rooms: tuple[str, ...] = ("general", "random")

    # -- the Redis store only (create_app(..., backend="redis://...")) --
    # Events kept per room stream: history and resume reach this far back; a message whose event
    # is trimmed leaves history, and a client resuming from before it gets `reset`. A `maxlen`
    # in the backend URL wins.
    redis_retention: int = 10_000
    # A room entry of an instance that stopped heartbeating expires after this many seconds (its
    # people then leave); instances heartbeat every third of it.
    presence_ttl: float = 15.0
    # How long a send's client_msg_id is remembered: a retry within it returns the first message.
    redis_sent_ttl: float = 7 * 24 * 3600.0
    # An upload not attached to a message (its send failed) is dropped after this many seconds.
    pending_upload_ttl: float = 3600.0
