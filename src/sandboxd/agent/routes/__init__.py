"""HTTP route modules of the agent. Each exposes `register(app)`; handlers stay thin over `app.services`."""
