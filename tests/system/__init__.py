"""Whole-system tests: every app at once, the bench, crashes, full disks, fuzzing, docs and packaging."""
