"""Training integration (TRL reward functions, SFT data pipeline) built on the SDK
client. Imports TRL lazily so the server installs without it. Empty until the
trainer-adapter issue lands.
"""
