"""Access: tenants, the API keys that act for them, and who may do what."""
