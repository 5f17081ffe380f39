"""Tests of showcase: its demos (/basics/, /bidi/), the combined server and the examples."""
