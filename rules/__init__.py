"""The rule layer: pure logic over the event stream and a clock.

Imports only `warden` (schema and configuration), never `agent` or `gateway`.
"""
