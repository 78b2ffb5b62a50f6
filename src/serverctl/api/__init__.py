"""HTTP: the operator REST API, the agent API and the agent downloads."""
