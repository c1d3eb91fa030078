"""Connectors to the operator's systems (IMAP, SMTP, Slack, HTTP APIs, MCP servers) and canonical records.

A room beside ``models/`` and ``memory/``: it may import the store, :mod:`crewline.secret_store`, errors,
config and the emitting half of ``observe/``; never ``flows/``, ``workers/``, ``server/`` or the app.
:mod:`.base` says how a connector type plugs in; :mod:`.registry` holds the table of types.
Workflows reach connectors through ``ctx.connector(name)`` (:mod:`crewline.flows.step_connector`).
"""
