"""Child output: pipes read by the loop, assembled into lines, written by sinks' own threads."""
