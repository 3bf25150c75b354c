"""Training providers behind one interface: openai/azure/sandbox (via the openai SDK)."""
