"""Benchmarks of circus-sd against Circus and supervisord (`make bench`); see bench/README.md."""
