"""Contracts shared by the services, the chaos engine and the operator (the single source)."""
