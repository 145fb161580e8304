"""Report: what an offline scan found, as text for a person or JSON for a program."""
