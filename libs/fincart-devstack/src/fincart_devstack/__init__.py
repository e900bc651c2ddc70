"""The development stack: embedded NATS (one node or a cluster), Redis and PostgreSQL, and `fincart-dev`.
Used by chaos/ (`run --local`), tests/ and benchmarks/; never by the service images."""
