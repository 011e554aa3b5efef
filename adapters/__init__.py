"""Channel adapters: one module per channel behind the `Adapter` Protocol in `base`."""
