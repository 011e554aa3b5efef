"""HTTP handlers, one module per resource; the route table is `omni.routes`."""
