"""Small apps built on ``shared`` to copy from: ``minimal`` (one topic) and ``toy`` (a live poll)."""
