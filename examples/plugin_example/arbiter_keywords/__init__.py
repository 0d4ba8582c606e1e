"""Example Arbiter plugin: scorers written with the SDK in a few lines each."""
