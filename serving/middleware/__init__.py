"""Collaborators of the gateway that make it safe and accountable: keys and tenants, quotas."""
