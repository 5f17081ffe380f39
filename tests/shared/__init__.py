"""Tests of the shared package (shared/), one module per concept."""
