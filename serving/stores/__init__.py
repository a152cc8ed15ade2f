"""The gateway's stores, each on SQLite (one node) or Redis (many): API keys and tenants, quotas and
their atomic counters, conversation history, answer records and feedback, the semantic cache."""
