"""What the gateway checks on the way in and out: authentication and scopes, the input and output
guardrails (and the guard that applies them), and JSON mode's check of answers against a schema."""
