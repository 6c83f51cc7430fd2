"""pytest plugin entry point for kaito_core.testing (registered as pytest11 `kaito`)."""
