"""The one "not allowed" error of the exec policy, shared by ``policy`` and ``argrules``."""

from __future__ import annotations

__all__ = ["PolicyRefusal"]


class PolicyRefusal(PermissionError):
    """The request is well formed but the policy does not allow it (the app answers 403).

    ``rule`` names the rule that refused it (``files.outside``, ``args.option``...), ``allow``
    says how an operator could allow it, or that nothing can.
    """

    def __init__(self, message: str, *, rule: str, allow: str) -> None:
        super().__init__(message)
        self.rule = rule
        self.allow = allow
