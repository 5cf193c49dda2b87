"""circus-sd: a process supervisor for the systemd era, compatible with Circus."""

__version__ = "0.1.0"
