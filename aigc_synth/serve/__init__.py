"""``aigc-synth serve``: online generation for simulators (Ray Serve + FastAPI).

* :mod:`aigc_synth.serve.protocol` – request checks, sample index → (condition, seed), encoding,
  token and bind checks (no Ray, no FastAPI);
* :mod:`aigc_synth.serve.app` – the deployments (``Api`` ingress, ``Generator`` with ``@serve.batch``);
* :mod:`aigc_synth.serve.server` – validate the config, connect Ray, start Serve, shut it down.

The client side is :mod:`aigc_synth.client` (stdlib only).
"""
