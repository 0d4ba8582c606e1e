"""Execution of untrusted model-written programs (isolation, limits, fork server).

Knows nothing of gRPC. The engine and the ``code`` scorer land with the sandbox
issue; until then this package is empty and the server loads no code scorer.
"""
