"""`circusctl`: drive a running circus-sd (or Circus) arbiter with Circus's command line."""

from circus_sd.ctl.app import main

__all__ = ["main"]
