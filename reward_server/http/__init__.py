"""The HTTP front door: the same scorers as gRPC, for tools that speak HTTP.

Off unless ``[http] enabled = true`` (or ``arbiter serve --http-port``). It runs on
the gRPC server's event loop, scores through the same ``RewardService`` and
``Dispatcher`` (so scorer concurrency, time limits, sample size limits and metrics
are shared), and takes the same bearer token and TLS certificate.

Endpoints, one module each:

* ``POST /get_reward`` (``_openrlhf``): OpenRLHF's ``--remote_rm_url`` protocol.
* ``POST /run_code`` (``_sandbox_fusion``): SandboxFusion's code execution API,
  run in Arbiter's sandbox.
* ``POST /v1/score``, ``POST /v1/score_batch``, ``GET /v1/scorers`` (``_plain``):
  plain JSON mirrors of ``Score``, ``ScoreBatch`` and ``ListScorers``.
* ``GET /health``: open (no token), for load balancers.

Every failure is a JSON answer: ``{"error": {"code", "message"}}`` with an HTTP
status for a refused request, a per-sample status for a sample that could not be
scored, SandboxFusion's own shape for ``/run_code``.
"""

from ._app import HttpFrontDoor

__all__ = ["HttpFrontDoor"]
