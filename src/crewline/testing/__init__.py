"""Test doubles for code that calls models, shipped as public API.

- :class:`ScriptedModel`: an in-process model replaying scripted replies, tool calls and failures.
- :class:`FakeProvider`: a loopback HTTP server speaking the OpenAI (chat completions, Responses),
  Anthropic, Gemini and Ollama wire formats, with :class:`Fault` injection (429 + retry-after, 5xx, timeouts, cut-off streams, bad JSON).
- :class:`FakeSlack`: a loopback server speaking Slack's Web API, sending interaction callbacks signed as
  Slack signs them.
"""

from __future__ import annotations

from .fake_server import FakeProvider, Fault, Reply, SeenRequest
from .fake_slack import FakeSlack, SlackUser
from .scripted import ScriptedModel, tool_call
from .wire import example_for_schema, fake_vector

__all__ = [
    "FakeProvider",
    "FakeSlack",
    "Fault",
    "Reply",
    "ScriptedModel",
    "SeenRequest",
    "SlackUser",
    "example_for_schema",
    "fake_vector",
    "tool_call",
]
