"""API keys: organisation keys (`ok_`) and project keys (`sk_`, `pk_`)."""
