"""A client named as notebook 06's scaffold names it: ``MyClient`` and ``MyClientError``."""

from __future__ import annotations

from tests.learner_shapes.clients import LearnerClient


class MyClientError(Exception):
    """Every failure of MyClient (the course calls it ClientError)."""


class MyClient(LearnerClient):
    """The learner client, under the scaffold's name (it raises the base's error class)."""
