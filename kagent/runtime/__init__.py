"""The agent runtime: what runs in an agent pod (`kagent runtime`)."""
