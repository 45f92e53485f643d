"""The response cache: exact and semantic lookups keyed on everything that decides an answer.

Imports only services.core: pipelines (the runner) and the gateway use it, it uses neither.
"""
