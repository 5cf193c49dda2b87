"""The control channel: Circus's ZMQ command protocol and the PUB events."""
