"""HTTP layer: the app factory, cross-cutting middleware, authentication and conventions."""
